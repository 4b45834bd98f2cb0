from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('kb', '0008_conversations'),
    ]

    operations = [
        migrations.AddField(
            model_name='collection',
            name='fusion',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='evaluationrun',
            name='fusion',
            field=models.CharField(blank=True, max_length=100),
        ),
    ]
