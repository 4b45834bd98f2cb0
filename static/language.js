/* The language switcher in the page header: choosing a language submits its form (Django's set_language view,
 * a POST with the CSRF token), so no inline script is needed and the CSP holds.  Without JavaScript the
 * form's own button does the same. */
(function () {
  "use strict";
  function init() {
    var form = document.querySelector('[data-role="language-switcher"]');
    if (!form) return;
    var select = form.querySelector("select");
    var apply = form.querySelector('[data-role="language-apply"]');
    if (apply) apply.hidden = true;
    select.addEventListener("change", function () {
      if (form.requestSubmit) form.requestSubmit(); else form.submit();
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
