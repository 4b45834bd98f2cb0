/* The sharing card of a collection page (owners only): share, unshare, set the policy via the REST API. */
(function () {
  "use strict";
  var card = document.querySelector('[data-role="sharing"]');
  var main = document.getElementById("main");
  if (!card || !main) return;
  var base = "/api/v1/collections/" + main.getAttribute("data-collection-id");
  var errorBox = document.getElementById("sharing-error");

  function csrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function showError(message) {
    errorBox.textContent = "";
    var p = document.createElement("p");
    p.className = "error-text";
    p.setAttribute("role", "alert");
    p.textContent = message;  // text, never HTML: messages can quote user input
    errorBox.appendChild(p);
  }

  function call(method, url, body) {
    return fetch(url, {
      method: method, credentials: "same-origin",
      headers: { "Accept": "application/json", "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (response) {
      if (response.ok) { window.location.reload(); return; }
      return response.json().then(function (data) {
        showError((data && data.error && data.error.message) || ("Request failed (" + response.status + ")"));
      }, function () { showError("Request failed (" + response.status + ")"); });
    }, function () { showError("The server could not be reached."); });
  }

  document.getElementById("share-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var form = event.target;
    var body = { role: form.role.value };
    body[form.kind.value] = form.name.value.trim();
    if (!body[form.kind.value]) { showError("Enter a user or group name."); return; }
    call("POST", base + "/members", body);
  });

  card.addEventListener("click", function (event) {
    var button = event.target.closest('[data-action="unshare"]');
    if (!button) return;
    var row = button.closest("tr");
    call("DELETE", base + "/members/" + encodeURIComponent(row.getAttribute("data-kind")) + "/" +
         encodeURIComponent(row.getAttribute("data-name")));
  });

  document.getElementById("policy-form").addEventListener("submit", function (event) {
    event.preventDefault();
    call("PUT", base + "/policy", { policy: event.target.policy.value });
  });
})();
