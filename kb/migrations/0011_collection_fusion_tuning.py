from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("kb", "0010_answer_feedback"),
    ]

    operations = [
        migrations.AddField(
            model_name="collection",
            name="fusion_tuning",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
