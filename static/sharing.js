/* The sharing card of a collection page (owners only): share, unshare, set the policy via the REST API. */
(function () {
  "use strict";
  var card = document.querySelector('[data-role="sharing"]');
  var main = document.getElementById("main");
  if (!card || !main) return;
  var base = "/api/v1/collections/" + main.getAttribute("data-collection-id");
  var shareErrors = document.getElementById("share-error");
  var policyErrors = document.getElementById("policy-error");
  var effectBox = document.getElementById("policy-effect");
  var errorBox = shareErrors;

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

  function request(method, url, body) {
    return fetch(url, {
      method: method, credentials: "same-origin",
      headers: { "Accept": "application/json", "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body)
    });
  }

  function call(method, url, body) {
    return request(method, url, body).then(function (response) {
      if (response.ok) { window.location.reload(); return; }
      return response.json().then(function (data) {
        showError((data && data.error && data.error.message) || ("Request failed (" + response.status + ")"));
      }, function () { showError("Request failed (" + response.status + ")"); });
    }, function () { showError("The server could not be reached."); });
  }

  document.getElementById("share-form").addEventListener("submit", function (event) {
    event.preventDefault();
    errorBox = shareErrors;
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
    errorBox = shareErrors;
    call("DELETE", base + "/members/" + encodeURIComponent(row.getAttribute("data-kind")) + "/" +
         encodeURIComponent(row.getAttribute("data-name")));
  });

  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

  /** The preview as sentences: "You would see 12 of 40 documents. bob (group finance) would lose access to 28." */
  function showEffect(effect) {
    effectBox.textContent = "";
    var lines = ["You would see " + effect.you.after + " of " + plural(effect.total, "document") +
                 " (now " + effect.you.before + ")."];
    effect.losing.forEach(function (row) {
      if (row.via === "you") return;
      lines.push(row.user + (row.via.indexOf("group ") === 0 ? " (" + row.via + ")" : "") + " would lose access to " +
                 plural(row.before - row.after, "document") + ".");
    });
    effect.gaining.forEach(function (row) {
      if (row.via === "you") return;
      lines.push(row.user + " would gain access to " + plural(row.after - row.before, "document") + ".");
    });
    lines.forEach(function (text, index) {
      var p = document.createElement("p");
      p.textContent = text;
      if (index === 0 && effect.hides_everything_from_you) p.className = "error-text";
      effectBox.appendChild(p);
    });
  }

  function preview(source) {
    errorBox = policyErrors;
    policyErrors.textContent = "";
    return request("POST", base + "/policy/preview", { policy: source }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) {
          showError((data && data.error && data.error.message) || ("Request failed (" + response.status + ")"));
          return null;
        }
        showEffect(data);
        return data;
      });
    }, function () { showError("The server could not be reached."); return null; });
  }

  card.querySelector('[data-action="preview-policy"]').addEventListener("click", function () {
    preview(document.getElementById("policy-source").value);
  });

  document.getElementById("policy-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var source = event.target.policy.value;
    errorBox = policyErrors;
    if (!source.trim()) { call("PUT", base + "/policy", { policy: "" }); return; }
    preview(source).then(function (effect) {
      if (!effect) return;
      if (effect.hides_everything_from_you &&
          !window.confirm("This policy would hide all " + plural(effect.total, "document") +
                          " from you. Save it anyway?")) return;
      errorBox = policyErrors;
      call("PUT", base + "/policy", { policy: source, confirm: effect.hides_everything_from_you });
    });
  });
})();
