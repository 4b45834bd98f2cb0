/* Cairn web UI: small progressive enhancements over server-rendered pages.
 *
 * No framework, no build step, nothing loaded from outside: this file is
 * served by Cairn itself.  All text that comes from users or documents is
 * put into the page with textContent / text nodes, never as HTML.
 */
(function () {
  "use strict";

  // Django's JavaScript catalogue (/jsi18n/, loaded first) defines these; the fallbacks keep English working without it.
  var gettext = window.gettext || function (s) { return s; };
  var ngettext = window.ngettext || function (s, p, n) { return n === 1 ? s : p; };
  var pgettext = window.pgettext || function (c, s) { return s; };
  var interpolate = window.interpolate || function (f, a, named) {
    return named ? f.replace(/%\((\w+)\)s/g, function (m, k) { return String(a[k]); }) : f.replace(/%s/g, function () { return String(a.shift()); });
  };
  var LANG = document.documentElement.lang || "en";

  /** A number in the page's language (1,234 / 1,234 — and digits grouped as the locale does). */
  function num(n) {
    try { return Number(n).toLocaleString(LANG); } catch (e) { return String(n); }
  }

  /** A processing state's label (the code itself stays in data-status and the CSS class). */
  function statusLabel(status) {
    var labels = {
      PENDING: pgettext("document status", "PENDING"), PARSING: pgettext("document status", "PARSING"),
      CHUNKING: pgettext("document status", "CHUNKING"), EMBEDDING: pgettext("document status", "EMBEDDING"),
      INDEXED: pgettext("document status", "INDEXED"), FAILED: pgettext("document status", "FAILED")
    };
    return labels[status] || status;
  }

  var FINAL_STATES = ["INDEXED", "FAILED"];
  var POLL_MS = 1500;

  // --- talking to the API ---------------------------------------------------

  function csrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function ApiError(message, status, code) {
    this.name = "ApiError";
    this.message = message;
    this.status = status;
    this.code = code || "";
  }
  ApiError.prototype = Object.create(Error.prototype);

  function parseJson(text) {
    if (!text) return null;
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  function errorMessage(data, status, statusText) {
    if (data && data.error && data.error.message) return data.error.message;
    if (status === 401 || status === 403) return gettext("You may not do this, or your session has ended — reload the page and sign in again.");
    if (status === 413) return gettext("The file is too large for this server.");
    if (status >= 500) return interpolate(gettext("The server ran into an error (%s). Please try again."), [status]);
    return interpolate(gettext("The server answered %s."), [(status + " " + (statusText || "")).trim()]);
  }

  var NETWORK_ERROR = gettext("Cannot reach the Cairn server. Check that it is running and try again.");

  /** fetch() with the CSRF header and the session cookie; resolves to parsed JSON, rejects with ApiError. */
  function api(method, url, body) {
    var headers = { "Accept": "application/json", "X-CSRFToken": csrfToken() };
    var payload;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    return fetch(url, { method: method, headers: headers, body: payload, credentials: "same-origin" })
      .catch(function () { throw new ApiError(NETWORK_ERROR, 0, "network"); })
      .then(function (response) {
        return response.text().then(function (text) {
          var data = parseJson(text);
          if (!response.ok) throw new ApiError(errorMessage(data, response.status, response.statusText), response.status, data && data.error && data.error.code);
          return data;
        });
      });
  }

  /** One file as multipart field "file"; XMLHttpRequest because fetch cannot report upload progress. */
  function uploadFile(url, file, onProgress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total);
      });
      xhr.addEventListener("load", function () {
        var data = parseJson(xhr.responseText);
        if (xhr.status >= 200 && xhr.status < 300) resolve({ status: xhr.status, data: data || {} });
        else reject(new ApiError(errorMessage(data, xhr.status, xhr.statusText), xhr.status, data && data.error && data.error.code));
      });
      xhr.addEventListener("error", function () { reject(new ApiError(NETWORK_ERROR, 0, "network")); });
      xhr.addEventListener("abort", function () { reject(new ApiError(gettext("The upload was cancelled."), 0, "aborted")); });
      var form = new FormData();
      form.append("file", file, file.name);
      xhr.send(form);
    });
  }

  // --- building DOM safely ------------------------------------------------------

  /** el("a", {href: "/x", class: "y"}, "text", child) — strings become text nodes. */
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === null || value === undefined || value === false) return;
        node.setAttribute(key, value === true ? "" : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(parent, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(parent, c); }); return; }
    parent.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }

  function showAlert(container, message, kind) {
    container.replaceChildren(el("div", { class: "alert alert--" + (kind || "error"), role: kind === "ok" ? "status" : "alert" }, message));
  }

  function clear(container) { container.replaceChildren(); }

  function loading(message) {
    return el("div", { class: "loading", role: "status" }, el("span", { class: "spinner", "aria-hidden": "true" }), message);
  }

  function setBusy(button, busy) {
    button.disabled = busy;
    if (busy) button.setAttribute("aria-busy", "true"); else button.removeAttribute("aria-busy");
  }

  function documentsCount(n) { return interpolate(ngettext("%s document", "%s documents", n), [num(n)]); }
  function passagesCount(n) { return interpolate(ngettext("%s passage", "%s passages", n), [num(n)]); }

  function formatSize(bytes) {
    if (!bytes && bytes !== 0) return "";
    var units = [gettext("bytes"), "KB", "MB", "GB"];
    var value = bytes, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
    var digits = unit === 0 ? 0 : (value < 10 ? 1 : 0);
    var shown;
    try { shown = value.toLocaleString(LANG, { minimumFractionDigits: digits, maximumFractionDigits: digits }); }
    catch (e) { shown = value.toFixed(digits); }
    return shown + " " + units[unit];
  }

  function percentText(fraction) {
    try { return Number(fraction).toLocaleString(LANG, { style: "percent", maximumFractionDigits: 0 }); }
    catch (e) { return Math.round(fraction * 100) + "%"; }
  }

  function documentUrl(id) { return "/documents/" + encodeURIComponent(id) + "/"; }

  function statusBadge(status) {
    return el("span", { class: "status status--" + String(status).toLowerCase() }, statusLabel(status));
  }

  function progressBar(fraction, label) {
    var percent = Math.max(0, Math.min(100, Math.round((Number(fraction) || 0) * 100)));
    var bar = el("span", { class: "progress__bar" });
    bar.style.width = percent + "%";
    return el("div", { class: "progress", role: "progressbar", "aria-label": label, "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": percent }, bar);
  }

  /** Passage text for a snippet: lines hard-wrapped in the source (PDF, Markdown) joined up; paragraphs and list items kept. */
  function reflow(text) {
    return String(text || "").replace(/([^\n])[ \t]*\n(?![ \t]*(\n|[-*•#>]|\d+[.)]\s))[ \t]*/g, "$1 ");
  }

  /** Text with the pieces the search matched wrapped in <mark>, built from text nodes (never HTML).
   *
   * ``pieces`` are the result's ``highlights`` from the search API: the words and CJK runs of this passage
   * whose index terms are the query's (so 带薪年假多少天 marks 带薪年假, "policies" marks "policy").  A word is
   * marked only as a whole word; a CJK run wherever it appears. */
  function highlighted(text, pieces) {
    var cjk = /[\u1100-\u11ff\u3005-\u3007\u3041-\u30ff\u3131-\u318e\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]/u;
    var alternatives = (pieces || []).filter(function (p) { return typeof p === "string" && p; })
      .sort(function (a, b) { return b.length - a.length; })
      .map(function (p) {
        var escaped = p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
        return cjk.test(p) ? escaped : "(?<![\\p{L}\\p{N}\\p{M}])" + escaped + "(?![\\p{L}\\p{N}\\p{M}])";
      });
    if (!alternatives.length) return [text];
    var pattern = new RegExp("(" + alternatives.join("|") + ")", "giu");
    return text.split(pattern).map(function (part, i) { return i % 2 ? el("mark", null, part) : part; });
  }

  // --- home: create a collection -------------------------------------------------

  function initHome() {
    var form = document.getElementById("collection-form");
    if (!form) return;
    var status = form.querySelector('[data-role="status"]');
    var nameInput = form.elements.namedItem("name");
    var descriptionInput = form.elements.namedItem("description");
    var button = form.querySelector('button[type="submit"]');

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var name = nameInput.value.trim();
      if (!name) {
        showAlert(status, gettext("Give the collection a name."));
        nameInput.setAttribute("aria-invalid", "true");
        nameInput.focus();
        return;
      }
      nameInput.removeAttribute("aria-invalid");
      clear(status);
      setBusy(button, true);
      api("POST", "/api/v1/collections", { name: name, description: descriptionInput.value.trim() })
        .then(function () { window.location.reload(); })
        .catch(function (error) {
          showAlert(status, error.message);
          setBusy(button, false);
        });
    });
  }

  // --- collection: documents, upload, search, ask ----------------------------------

  function initCollection(main) {
    var collectionId = main.getAttribute("data-collection-id");
    var documentsUrl = "/api/v1/collections/" + encodeURIComponent(collectionId) + "/documents";
    initDocuments(documentsUrl);
    initAsk(collectionId);
    initManage(collectionId);
  }

  /** Owners: rename the collection, or delete it after a confirmation that says what goes with it. */
  function initManage(collectionId) {
    var rename = document.getElementById("rename-form");
    if (!rename) return;
    var errors = document.getElementById("manage-error");
    var url = "/api/v1/collections/" + encodeURIComponent(collectionId);
    rename.addEventListener("submit", function (event) {
      event.preventDefault();
      var name = rename.name.value.trim();
      if (!name) { showAlert(errors, gettext("A collection needs a name.")); return; }
      api("PATCH", url, { name: name })
        .then(function () { window.location.reload(); })
        .catch(function (error) { showAlert(errors, error.message); });
    });
    var remove = document.querySelector('[data-action="delete-collection"]');
    remove.addEventListener("click", function () {
      var count = Number(remove.getAttribute("data-documents")) || 0;
      if (!window.confirm(interpolate(ngettext(
            "Delete “%(name)s” and its %(count)s document? Everyone it is shared with loses it; this cannot be undone.",
            "Delete “%(name)s” and its %(count)s documents? Everyone it is shared with loses it; this cannot be undone.", count),
          { name: remove.getAttribute("data-name"), count: num(count) }, true))) return;
      api("DELETE", url)
        .then(function () { window.location.assign("/"); })
        .catch(function (error) { showAlert(errors, error.message); });
    });
  }

  function initDocuments(documentsUrl) {
    var tbody = document.getElementById("documents-body");
    var tableWrap = document.getElementById("documents-table-wrap");
    var empty = document.getElementById("documents-empty");
    var count = document.getElementById("documents-count");
    var errorBox = document.getElementById("documents-error");
    var input = document.getElementById("upload-input");
    var dropzone = document.querySelector('[data-role="dropzone"]');
    var uploadResults = document.getElementById("upload-results");
    var signatures = {};   // row id -> JSON of the document it shows, so unchanged rows are left alone
    var uploads = {};      // document id -> the upload-result line that reports on it
    var pollTimer = null;
    var inFlight = false;
    var again = false;

    function rows() { return Array.prototype.slice.call(tbody.querySelectorAll("tr[data-id]")); }

    function anyActive() {
      return rows().some(function (row) { return FINAL_STATES.indexOf(row.getAttribute("data-status")) < 0; });
    }

    function updateCounts() {
      var n = rows().length;
      count.textContent = documentsCount(n);
      empty.classList.toggle("is-hidden", n > 0);
      tableWrap.classList.toggle("is-hidden", n === 0);
    }

    function fillRow(row, doc) {
      var focused = row.contains(document.activeElement) ? document.activeElement.getAttribute("data-action") : null;
      row.setAttribute("data-status", doc.status);
      row.setAttribute("data-title", doc.title);

      var meta = [];
      if (doc.version) meta.push(interpolate(gettext("v%s"), [doc.version]));
      if (doc.kind) meta.push(doc.kind);
      if (doc.size) meta.push(formatSize(doc.size));

      var progressCell = el("td", { class: "doc-row__progress" });
      if (doc.status === "INDEXED") {
        append(progressCell, el("span", { class: "muted small" }, passagesCount(doc.chunks)));
      } else if (doc.status === "FAILED") {
        append(progressCell, el("p", { class: "error-text" }, doc.error || gettext("Processing failed.")));
        append(progressCell, el("button", { type: "button", class: "button button--small", "data-action": "retry" }, gettext("Retry")));
      } else {
        append(progressCell, progressBar(doc.progress, interpolate(gettext("Processing %s"), [doc.title])));
        append(progressCell, el("div", { class: "muted small" }, doc.detail || (doc.status === "PENDING" ? gettext("Waiting to be processed…") : "")));
      }

      row.replaceChildren(
        el("td", { class: "doc-row__title" },
          el("a", { href: documentUrl(doc.id) }, doc.title),
          el("div", { class: "muted small" }, meta.join(" · "))),
        el("td", null, statusBadge(doc.status)),
        progressCell,
        el("td", { class: "doc-row__actions" },
          el("button", { type: "button", class: "button button--small button--danger", "data-action": "delete", "aria-label": interpolate(gettext("Delete %s"), [doc.title]) }, gettext("Delete")))
      );
      if (focused) {
        var refocus = row.querySelector('[data-action="' + focused + '"]');
        if (refocus) refocus.focus();
      }
    }

    function render(documents) {
      var existing = {};
      rows().forEach(function (row) { existing[row.getAttribute("data-id")] = row; });
      documents.forEach(function (doc, index) {
        var id = String(doc.id);
        var row = existing[id];
        delete existing[id];
        if (!row) {
          row = el("tr", { class: "doc-row", "data-id": id });
          signatures[id] = null;
        }
        var signature = JSON.stringify(doc);
        if (signatures[id] !== signature) {
          fillRow(row, doc);
          signatures[id] = signature;
          reportUpload(doc);
        }
        var current = tbody.children[index];
        if (current !== row) tbody.insertBefore(row, current || null);
      });
      Object.keys(existing).forEach(function (id) { existing[id].remove(); delete signatures[id]; });
      updateCounts();
    }

    function reportUpload(doc) {
      var entry = uploads[String(doc.id)];
      if (!entry) return;
      if (doc.status === "INDEXED") {
        entry.state.textContent = interpolate(ngettext("Indexed: %s passage, ready to search.", "Indexed: %s passages, ready to search.", doc.chunks), [num(doc.chunks)]);
        delete uploads[String(doc.id)];
      } else if (doc.status === "FAILED") {
        entry.item.classList.remove("upload-result--ok");
        entry.item.classList.add("upload-result--error");
        entry.state.textContent = interpolate(gettext("Processing failed: %s"), [doc.error || gettext("unknown error")]);
        delete uploads[String(doc.id)];
      } else {
        entry.state.textContent = doc.progress
          ? interpolate(gettext("Uploaded; %(status)s %(percent)s…"), { status: statusLabel(doc.status).toLowerCase(), percent: percentText(doc.progress) }, true)
          : interpolate(gettext("Uploaded; %(status)s…"), { status: statusLabel(doc.status).toLowerCase() }, true);
      }
    }

    function schedule() {
      clearTimeout(pollTimer);
      pollTimer = anyActive() ? setTimeout(refresh, POLL_MS) : null;
    }

    function refresh() {
      if (inFlight) { again = true; return Promise.resolve(); }
      inFlight = true;
      clearTimeout(pollTimer);
      return api("GET", documentsUrl)
        .then(function (data) {
          render((data && data.results) || []);
          clear(errorBox);
        })
        .catch(function (error) {
          showAlert(errorBox, interpolate(gettext("Could not refresh the document list: %s"), [error.message]));
        })
        .then(function () {
          inFlight = false;
          if (again) { again = false; return refresh(); }
          schedule();
        });
    }

    // Row buttons (server-rendered or built above) are handled here.
    tbody.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-action]");
      if (!button) return;
      var row = button.closest("tr[data-id]");
      var id = row.getAttribute("data-id");
      var title = row.getAttribute("data-title") || gettext("this document");
      var action = button.getAttribute("data-action");
      if (action === "delete") {
        if (!window.confirm(interpolate(gettext("Delete “%s”? It will no longer be searchable."), [title]))) return;
        setBusy(button, true);
        api("DELETE", "/api/v1/documents/" + encodeURIComponent(id))
          .then(function () {
            row.remove();
            delete signatures[id];
            updateCounts();
            showAlert(errorBox, interpolate(gettext("Deleted “%s”."), [title]), "ok");
            document.getElementById("documents-heading").focus();
          })
          .catch(function (error) {
            showAlert(errorBox, interpolate(gettext("Could not delete “%(title)s”: %(error)s"), { title: title, error: error.message }, true));
            setBusy(button, false);
          });
      } else if (action === "retry") {
        setBusy(button, true);
        api("POST", "/api/v1/documents/" + encodeURIComponent(id) + "/reprocess")
          .then(function () { clear(errorBox); return refresh(); })
          .catch(function (error) {
            showAlert(errorBox, interpolate(gettext("Could not retry “%(title)s”: %(error)s"), { title: title, error: error.message }, true));
            setBusy(button, false);
          });
      }
    });

    function uploadAll(fileList) {
      var files = Array.prototype.slice.call(fileList || []);
      if (!files.length) return;
      var items = files.map(function (file) {
        var state = el("span", { class: "upload-result__state" }, gettext("Waiting…"));
        var item = el("li", { class: "upload-result" }, el("span", { class: "upload-result__name" }, file.name), state);
        uploadResults.prepend(item);
        return { file: file, item: item, state: state };
      });
      // One request per file, one at a time: gentle on the server and the results arrive in order.
      return items.reduce(function (previous, entry) {
        return previous.then(function () {
          entry.state.textContent = gettext("Uploading…");
          return uploadFile(documentsUrl, entry.file, function (fraction) {
            entry.state.textContent = interpolate(gettext("Uploading… %s"), [percentText(fraction)]);
          }).then(function (result) {
            entry.item.classList.add("upload-result--ok");
            if (result.data.duplicate) {
              entry.state.textContent = interpolate(gettext("Already in this collection (“%s”): nothing new to process."), [result.data.title]);
            } else {
              entry.state.textContent = result.data.version > 1
                ? interpolate(gettext("Uploaded as version %s; processing…"), [result.data.version]) : gettext("Uploaded; processing…");
              if (result.data.id !== undefined) uploads[String(result.data.id)] = entry;
            }
            return refresh();
          }).catch(function (error) {
            entry.item.classList.add("upload-result--error");
            entry.item.setAttribute("role", "alert");
            entry.state.textContent = error.message;
          });
        });
      }, Promise.resolve());
    }

    input.addEventListener("change", function () {
      var files = Array.prototype.slice.call(input.files || []);
      uploadAll(files);
      input.value = "";
    });

    var depth = 0;
    dropzone.addEventListener("dragenter", function (event) {
      event.preventDefault();
      depth++;
      dropzone.classList.add("is-dragover");
    });
    dropzone.addEventListener("dragover", function (event) {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
    });
    dropzone.addEventListener("dragleave", function () {
      depth = Math.max(0, depth - 1);
      if (!depth) dropzone.classList.remove("is-dragover");
    });
    dropzone.addEventListener("drop", function (event) {
      event.preventDefault();
      depth = 0;
      dropzone.classList.remove("is-dragover");
      if (event.dataTransfer) uploadAll(event.dataTransfer.files);
    });
    // A file dropped next to the drop zone must not make the browser navigate away from the page.
    ["dragover", "drop"].forEach(function (type) {
      window.addEventListener(type, function (event) {
        if (!dropzone.contains(event.target)) event.preventDefault();
      });
    });

    updateCounts();
    if (anyActive()) refresh();
  }

  function initAsk(collectionId) {
    var form = document.getElementById("ask-form");
    var textarea = document.getElementById("ask-question");
    var result = document.getElementById("ask-result");
    var thread = document.getElementById("ask-thread");
    var button = form.querySelector('button[type="submit"]');
    var stop = document.getElementById("ask-stop");
    var fresh = document.getElementById("ask-new");
    var params = new URLSearchParams(window.location.search);
    var conversationId = /^\d+$/.test(params.get("conversation") || "") ? params.get("conversation") : null;
    var current = null;

    function setConversation(id) {
      conversationId = id;
      var url = new URL(window.location.href);
      if (id) url.searchParams.set("conversation", id); else url.searchParams.delete("conversation");
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
      fresh.hidden = !id;
    }

    /** The latest answer joins the thread above (its element ids dropped: only the latest turn has them). */
    function archiveLatest() {
      if (!result.childNodes.length) return;
      var turn = el("div", { class: "answer turn" });
      while (result.firstChild) turn.appendChild(result.firstChild);
      turn.cairnCitations = result.cairnCitations;
      turn.querySelectorAll("[id]").forEach(function (node) { node.removeAttribute("id"); });
      thread.appendChild(turn);
    }

    function showTurn(turn) {
      archiveLatest();
      if (turn.withheld) {
        result.replaceChildren(el("p", { class: "answer__question" }, turn.question),
                               el("p", { class: "notice" }, gettext("This answer cited passages you can no longer read, so it is not shown.")));
      } else if (turn.state === "answered") {
        renderAnswer(result, turn.question, turn.answer || {}, answerContext(turn.question, turn.id));
      } else {
        result.replaceChildren(el("p", { class: "answer__question" }, turn.question),
                               el("p", { class: "muted small" }, turn.state === "stopped" ? gettext("Stopped before the answer was finished.") : gettext("This answer failed.")));
      }
    }

    function ensureConversation() {
      if (conversationId) return Promise.resolve(conversationId);
      return api("POST", "/api/v1/conversations", { collection: Number(collectionId) }).then(function (created) {
        setConversation(String(created.id));
        return conversationId;
      });
    }

    if (conversationId) {  // a reload, or a link to a conversation: show it again
      api("GET", "/api/v1/conversations/" + conversationId).then(function (conversation) {
        (conversation.turns || []).forEach(showTurn);
        fresh.hidden = false;
      }, function () { setConversation(null); });
    }

    fresh.addEventListener("click", function () {
      if (current) current.abort();
      thread.replaceChildren();
      result.replaceChildren();
      setConversation(null);
      textarea.focus();
    });

    stop.addEventListener("click", function () { if (current) current.abort(); });

    textarea.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit ? form.requestSubmit() : button.click();
      }
    });

    /** What the bar under an answer needs: who to rate it as, and how to ask it again (a new turn). */
    function answerContext(question, turnId) {
      return { question: question, collection: collectionId, conversation: conversationId, turn: turnId || null,
               regenerate: function () { if (!button.disabled) ask(question, false); } };
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var question = textarea.value.trim();
      if (!question) {
        showAlert(result, gettext("Type a question first."));
        textarea.focus();
        return;
      }
      ask(question, true);
    });

    function ask(question, typed) {
      setBusy(button, true);
      stop.hidden = false;
      archiveLatest();
      result.setAttribute("aria-busy", "true");
      result.replaceChildren(loading(gettext("Reading your documents and writing an answer…")));
      if (current) current.abort();  // leaving a generation cancels it on the server
      var controller = window.AbortController ? new AbortController() : null;
      current = controller;
      ensureConversation()
        .then(function (id) {
          return askStreaming(question, collectionId, result, controller, "/api/v1/conversations/" + id + "/messages",
                              answerContext(question));
        })
        .then(function () { if (typed) textarea.value = ""; })
        .catch(function (error) {
          if (error && error.name === "AbortError") {
            append(result, el("p", { class: "muted small", "data-role": "stopped" }, gettext("Stopped.")));
            return;
          }
          showAlert(result, error.message);
        })
        .then(function () {
          if (current === controller) current = null;
          setBusy(button, false);
          stop.hidden = true;
          result.removeAttribute("aria-busy");
        });
    }
    window.addEventListener("pagehide", function () { if (current) current.abort(); });
  }

  /** A question as server-sent events (POST /api/v1/ask, or a conversation's messages): reasoning and answer appear as they are written. */
  function askStreaming(question, collectionId, result, controller, url, context) {
    var headers = { "Accept": "text/event-stream", "Content-Type": "application/json", "X-CSRFToken": csrfToken() };
    var body = JSON.stringify({ question: question, collection: Number(collectionId), stream: true });
    var live = { reasoning: "", answer: "", citations: null };
    var reasoningBox = el("pre", { class: "reasoning" });
    var answerBox = el("div", { class: "answer__text", "aria-live": "polite" });
    function show() {
      var parts = [el("p", { class: "answer__question" }, question)];
      if (live.reasoning) parts.push(el("details", null, el("summary", null, gettext("Reasoning (writing…)")), reasoningBox));
      parts.push(answerBox);
      result.replaceChildren.apply(result, parts);
    }
    function handle(name, data) {
      if (name === "reasoning") {
        var first = !live.reasoning;
        live.reasoning += data.text;
        reasoningBox.textContent = live.reasoning;
        if (first) show();
      } else if (name === "token") {
        if (!live.answer && !live.reasoning) show();
        live.answer += data.text;
        answerBox.replaceChildren(window.CairnAnswer.body(live.answer, {}));  // Markdown as it is written
      } else if (name === "citations") {
        live.citations = data;
      } else if (name === "done") {
        var c = live.citations || {};
        renderAnswer(result, question, {
          answer: data.answer, reasoning: data.reasoning, generated: data.generated, model: data.model,
          finish_reason: data.finish_reason, truncated: data.truncated,
          citations: c.citations || [], citation_mode: c.citation_mode, passages: c.passages || []
        }, context);
      } else if (name === "error") {
        throw new ApiError((data.error && data.error.message) || gettext("The answer could not be generated."), 0, data.error && data.error.code);
      }
    }
    return fetch(url || "/api/v1/ask", { method: "POST", headers: headers, body: body, credentials: "same-origin",
                                   signal: controller ? controller.signal : undefined })
      .catch(function (error) {
        if (error && error.name === "AbortError") throw error;
        throw new ApiError(NETWORK_ERROR, 0, "network");
      })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (!response.ok || type.indexOf("text/event-stream") !== 0 || !response.body) {
          return response.text().then(function (text) {
            var data = parseJson(text);
            if (!response.ok) throw new ApiError(errorMessage(data, response.status, response.statusText), response.status, data && data.error && data.error.code);
            renderAnswer(result, question, data || {}, context);
          });
        }
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) return;
            buffer += decoder.decode(chunk.value, { stream: true });
            var end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              var block = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              var name = "message";
              var data = [];
              block.split("\n").forEach(function (line) {
                if (line.indexOf("event: ") === 0) name = line.slice(7);
                else if (line.indexOf("data: ") === 0) data.push(line.slice(6));
              });
              if (data.length) handle(name, JSON.parse(data.join("\n")));
            }
            return pump();
          });
        }
        return pump();
      });
  }

  function renderAnswer(container, question, data, context) {
    var citations = data.citations || [];
    var known = {};
    citations.forEach(function (c) { known[String(c.number)] = c; });

    var parts = [];
    var labels = el("div", { class: "answer__labels" });
    if (data.generated === false) append(labels, el("span", { class: "badge badge--label" }, gettext("Extracts — no language model configured")));
    if (labels.childNodes.length) parts.push(labels);
    parts.push(el("p", { class: "answer__question" }, question));
    parts.push(el("div", { class: "answer__text" }, window.CairnAnswer.body(data.answer || "", known)));
    if (context && data.answer) {
      var bar = {};
      Object.keys(context).forEach(function (key) { bar[key] = context[key]; });
      bar.data = data;
      parts.push(window.CairnAnswer.toolbar(bar));
    }

    if (data.reasoning) {
      parts.push(el("details", null, el("summary", null, gettext("Reasoning")), el("pre", { class: "reasoning" }, data.reasoning)));
    }

    if (citations.length) {
      parts.push(el("h3", null, data.citation_mode === "context" ? gettext("Passages the answer was drawn from") : gettext("Sources")));
      var list = el("ol", { class: "citations", role: "list" });
      citations.forEach(function (c) {
        var meta = [];
        if (c.page !== null && c.page !== undefined) meta.push(interpolate(gettext("Page %s"), [c.page]));
        if (c.heading) meta.push(c.heading);
        append(list, el("li", { class: "citation", id: "cite-" + c.number, "data-number": c.number },
          el("span", { class: "citation__number" }, "[" + c.number + "]"),
          el("a", { class: "citation__title", href: passageUrl(c.document_id, c.chunk_id) }, c.title),
          meta.length ? el("span", { class: "citation__meta" }, meta.join(" · ")) : null,
          el("p", { class: "citation__text" }, reflow(c.text)),
          el("button", { type: "button", class: "button button--small citation__open", "data-number": c.number,
                         "aria-haspopup": "dialog" }, gettext("Show passage"))));
      });
      parts.push(list);
    } else {
      parts.push(el("p", { class: "muted" }, gettext("No passage in this collection matched the question, so there is nothing to cite.")));
    }
    container.replaceChildren.apply(container, parts);
    container.cairnCitations = known;
  }

  function passageUrl(documentId, chunkId) {
    return documentUrl(documentId) + "?chunk=" + encodeURIComponent(chunkId) + "#chunk-" + encodeURIComponent(chunkId);
  }

  // Clicking a [n] marker or a source card highlights the card and opens the passage beside the answer.
  document.addEventListener("click", function (event) {
    if (!event.target.closest) return;
    var trigger = event.target.closest("a.cite-ref, button.citation__open, li.citation");
    if (!trigger || event.target.closest("a.citation__title")) return;
    if (trigger.matches("li.citation") && window.getSelection && String(window.getSelection())) return;  // selecting text
    var holder = trigger.closest(".answer");
    var citation = holder && holder.cairnCitations && holder.cairnCitations[trigger.getAttribute("data-number")];
    if (!citation) return;
    event.preventDefault();
    document.querySelectorAll(".citation.is-highlighted").forEach(function (c) { c.classList.remove("is-highlighted"); });
    var card = document.getElementById("cite-" + citation.number);
    if (card) card.classList.add("is-highlighted");
    openViewer(citation, trigger.matches("li.citation") ? (card.querySelector(".citation__open") || card) : trigger);
  });

  // --- the citation viewer: the passage in its context, and its PDF page with the passage marked -------

  var viewer = null;

  function viewerPanel() {
    if (viewer) return viewer;
    var title = el("h2", { id: "viewer-title", class: "viewer__title", tabindex: "-1" });
    var close = el("button", { type: "button", class: "button button--small viewer__close", "aria-label": gettext("Close the passage") }, gettext("Close"));
    var meta = el("p", { class: "viewer__meta muted small" });
    var body = el("div", { class: "viewer__body" });
    var panel = el("div", { id: "viewer", class: "viewer", role: "dialog", "aria-modal": "false",
                              "aria-labelledby": "viewer-title", hidden: true },
      el("div", { class: "viewer__head" }, title, close), meta, body);
    close.addEventListener("click", function () { closeViewer(); });
    panel.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { event.preventDefault(); closeViewer(); }
    });
    document.body.appendChild(panel);
    viewer = { panel: panel, title: title, meta: meta, body: body, opener: null, request: 0 };
    return viewer;
  }

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && viewer && !viewer.panel.hidden) closeViewer();
  });

  function closeViewer() {
    if (!viewer || viewer.panel.hidden) return;
    viewer.panel.hidden = true;
    viewer.request += 1;
    document.body.classList.remove("viewer-open");
    var opener = viewer.opener;
    viewer.opener = null;
    if (opener && document.contains(opener)) opener.focus();
  }

  function openViewer(citation, opener) {
    var v = viewerPanel();
    var request = ++v.request;
    v.opener = opener || null;
    v.title.textContent = citation.title;
    var meta = [];
    if (citation.page !== null && citation.page !== undefined) meta.push(interpolate(gettext("Page %s"), [citation.page]));
    if (citation.heading) meta.push(citation.heading);
    v.meta.replaceChildren(meta.join(" · "), meta.length ? " · " : "",
      el("a", { href: passageUrl(citation.document_id, citation.chunk_id) }, gettext("Open in the document")));
    v.body.replaceChildren(passageInContext(citation.text, "", ""), loading(gettext("Loading the passage…")));
    v.panel.hidden = false;
    document.body.classList.add("viewer-open");
    v.title.focus();
    var id = encodeURIComponent(citation.chunk_id);
    Promise.all([
      api("GET", "/api/v1/chunks/" + id + "?context=400"),
      citation.page !== null && citation.page !== undefined ? api("GET", "/api/v1/chunks/" + id + "/boxes").catch(function () { return null; }) : null
    ]).then(function (answers) {
      if (request !== v.request) return;
      var chunk = answers[0], boxes = answers[1];
      var parts = [passageInContext(chunk.text, chunk.context_before, chunk.context_after)];
      if (boxes && boxes.page) parts.push(pageFigure(chunk.document_id, boxes));
      v.body.replaceChildren.apply(v.body, parts);
      var mark = v.body.querySelector(".viewer__passage");
      if (mark && mark.scrollIntoView) mark.scrollIntoView({ block: "nearest" });
    }).catch(function (error) {
      if (request !== v.request) return;
      v.body.replaceChildren(passageInContext(citation.text, "", ""));
      append(v.body, el("div", { class: "alert alert--error", role: "alert" }, error.message));
    });
  }

  function passageInContext(text, before, after) {
    return el("section", { class: "viewer__context", "aria-label": gettext("The passage in its context") },
      el("p", { class: "viewer__text" },
        before ? el("span", { class: "viewer__around" }, "…" + reflow(before)) : null,
        el("mark", { class: "viewer__passage" }, reflow(text)),
        after ? el("span", { class: "viewer__around" }, reflow(after) + "…") : null));
  }

  function pageFigure(documentId, boxes) {
    var image = el("img", { class: "viewer__image", alt: interpolate(gettext("Page %s of the document, the passage marked"), [boxes.page]),
                            src: "/api/v1/documents/" + encodeURIComponent(documentId) + "/pages/" + encodeURIComponent(boxes.page) + ".png?width=1000" });
    var sheet = el("div", { class: "viewer__sheet" }, image);
    (boxes.boxes || []).forEach(function (b) {
      var mark = el("div", { class: "viewer__box", "aria-hidden": "true" });
      mark.style.left = (b[0] * 100) + "%";
      mark.style.top = (b[1] * 100) + "%";
      mark.style.width = ((b[2] - b[0]) * 100) + "%";
      mark.style.height = ((b[3] - b[1]) * 100) + "%";
      sheet.appendChild(mark);
    });
    image.addEventListener("error", function () {
      sheet.replaceWith(el("p", { class: "muted small" }, gettext("The page image could not be shown.")));
    });
    return el("figure", { class: "viewer__page" }, sheet,
      el("figcaption", { class: "muted small" }, boxes.boxes && boxes.boxes.length
        ? interpolate(gettext("Page %s, the passage marked"), [boxes.page]) : interpolate(gettext("Page %s"), [boxes.page])));
  }

  // --- document: follow processing until it ends ------------------------------------

  /** Editors: Retry a FAILED document, Replace it with a new file, restore an earlier version, delete it. */
  function initDocumentActions(main) {
    var actions = document.querySelector('[data-role="document-actions"]');
    if (!actions) return;
    var id = main.getAttribute("data-document-id");
    var url = "/api/v1/documents/" + encodeURIComponent(id);
    var errors = document.getElementById("document-error");
    function fail(error) { showAlert(errors, error.message); }
    document.addEventListener("click", function (event) {
      var button = event.target.closest && event.target.closest("[data-document-action]");
      if (!button) return;
      var action = button.getAttribute("data-document-action");
      if (action === "retry") {
        setBusy(button, true);
        api("POST", url + "/reprocess").then(function () { window.location.reload(); }, function (error) { setBusy(button, false); fail(error); });
      } else if (action === "delete") {
        if (!window.confirm(interpolate(gettext("Delete “%s” and all its versions? It disappears from search and answers at once."), [button.getAttribute("data-title")]))) return;
        api("DELETE", url).then(function () { window.location.assign(button.getAttribute("data-back")); }, fail);
      } else if (action === "restore") {
        var number = button.getAttribute("data-version");
        if (!window.confirm(interpolate(gettext("Make version %s the newest version again? It is processed like an upload."), [number]))) return;
        setBusy(button, true);
        api("POST", url + "/versions/" + encodeURIComponent(number) + "/restore")
          .then(function () { window.location.reload(); }, function (error) { setBusy(button, false); fail(error); });
      }
    });
    var replace = document.getElementById("replace-input");
    if (replace) {
      replace.addEventListener("change", function () {
        if (!replace.files.length) return;
        uploadFile(url + "/versions", replace.files[0], function () {})
          .then(function () { window.location.reload(); }, fail);
      });
    }
  }

  function initDocument(main) {
    var target = document.querySelector(".passage--target");
    if (target) {
      target.scrollIntoView({ block: "center" });
      target.focus({ preventScroll: true });
    }
    initDocumentActions(main);
    var status = main.getAttribute("data-status");
    if (FINAL_STATES.indexOf(status) >= 0) return;
    var id = main.getAttribute("data-document-id");
    function poll() {
      api("GET", "/api/v1/documents/" + encodeURIComponent(id))
        .then(function (doc) {
          if (doc.status !== status && FINAL_STATES.indexOf(doc.status) >= 0) { window.location.reload(); return; }
          var bar = main.querySelector(".progress");
          if (bar) {
            var percent = Math.round((Number(doc.progress) || 0) * 100);
            bar.setAttribute("aria-valuenow", percent);
            bar.firstElementChild.style.width = percent + "%";
            if (bar.nextElementSibling && doc.detail) bar.nextElementSibling.textContent = doc.detail;
          }
          var badge = document.getElementById("document-status");
          if (badge) { badge.textContent = statusLabel(doc.status); badge.className = "status status--" + doc.status.toLowerCase(); }
          setTimeout(poll, POLL_MS);
        })
        .catch(function () { setTimeout(poll, POLL_MS * 4); });
    }
    setTimeout(poll, POLL_MS);
  }

  /** Server-rendered progress bars carry their value in aria-valuenow (no inline style: the CSP forbids it). */
  function sizeProgressBars() {
    var bars = document.querySelectorAll(".progress[aria-valuenow] > .progress__bar");
    for (var i = 0; i < bars.length; i++) {
      var value = Number(bars[i].parentNode.getAttribute("aria-valuenow")) || 0;
      bars[i].style.width = Math.max(0, Math.min(100, value)) + "%";
    }
  }

  // The helpers the page's other scripts (search.js, answer.js) build on.
  window.Cairn = { api: api, el: el, append: append, showAlert: showAlert, loading: loading, setBusy: setBusy,
                   num: num, reflow: reflow, highlighted: highlighted, passageUrl: passageUrl };

  function init() {
    sizeProgressBars();
    var main = document.getElementById("main");
    if (!main) return;
    var page = main.getAttribute("data-page");
    if (page === "home") initHome();
    else if (page === "collection") initCollection(main);
    else if (page === "document") initDocument(main);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
