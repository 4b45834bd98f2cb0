/* The sharing card of a collection page (owners only): share, unshare, set the policy via the REST API. */
(function () {
  "use strict";
  // Django's JavaScript catalogue (/jsi18n/) defines these; the fallbacks keep English working without it.
  var gettext = window.gettext || function (s) { return s; };
  var ngettext = window.ngettext || function (s, p, n) { return n === 1 ? s : p; };
  var interpolate = window.interpolate || function (f, a, named) {
    return named ? f.replace(/%\((\w+)\)s/g, function (m, k) { return String(a[k]); }) : f.replace(/%s/g, function () { return String(a.shift()); });
  };
  var LANG = document.documentElement.lang || "en";
  function num(n) { try { return Number(n).toLocaleString(LANG); } catch (e) { return String(n); } }
  function requestFailed(status) { return interpolate(gettext("Request failed (%s)"), [status]); }
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
        showError((data && data.error && data.error.message) || requestFailed(response.status));
      }, function () { showError(requestFailed(response.status)); });
    }, function () { showError(gettext("The server could not be reached.")); });
  }

  document.getElementById("share-form").addEventListener("submit", function (event) {
    event.preventDefault();
    errorBox = shareErrors;
    var form = event.target;
    var body = { role: form.role.value };
    body[form.kind.value] = form.name.value.trim();
    if (!body[form.kind.value]) { showError(gettext("Enter a user or group name.")); return; }
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

  /** The preview as sentences: "You would see 12 of 40 documents. bob (group finance) would lose access to 28." */
  function showEffect(effect) {
    effectBox.textContent = "";
    var lines = [interpolate(ngettext("You would see %(after)s of %(total)s document (now %(before)s).",
                                      "You would see %(after)s of %(total)s documents (now %(before)s).", effect.total),
                             { after: num(effect.you.after), total: num(effect.total), before: num(effect.you.before) }, true)];
    effect.losing.forEach(function (row) {
      if (row.via === "you") return;
      var lost = row.before - row.after;
      var who = row.via.indexOf("group ") === 0
        ? interpolate(gettext("%(user)s (group %(group)s)"), { user: row.user, group: row.via.slice(6) }, true) : row.user;
      lines.push(interpolate(ngettext("%(who)s would lose access to %(count)s document.",
                                      "%(who)s would lose access to %(count)s documents.", lost),
                             { who: who, count: num(lost) }, true));
    });
    effect.gaining.forEach(function (row) {
      if (row.via === "you") return;
      var gained = row.after - row.before;
      lines.push(interpolate(ngettext("%(who)s would gain access to %(count)s document.",
                                      "%(who)s would gain access to %(count)s documents.", gained),
                             { who: row.user, count: num(gained) }, true));
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
          showError((data && data.error && data.error.message) || requestFailed(response.status));
          return null;
        }
        showEffect(data);
        return data;
      });
    }, function () { showError(gettext("The server could not be reached.")); return null; });
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
          !window.confirm(interpolate(ngettext("This policy would hide all %s document from you. Save it anyway?",
                                               "This policy would hide all %s documents from you. Save it anyway?", effect.total),
                                      [num(effect.total)]))) return;
      errorBox = policyErrors;
      call("PUT", base + "/policy", { policy: source, confirm: effect.hides_everything_from_you });
    });
  });
})();
