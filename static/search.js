/* Search on a collection's page: the query and its filters (mode, document, file type, upload
 * dates, document attributes) live in the URL, so Back, Forward and a reload show the same
 * search again; results come grouped by document, each passage with its relevance as a bar
 * relative to the best result (never the raw fused score), and a notice when nothing matched well.
 *
 * Uses window.Cairn (static/cairn.js).
 */
(function () {
  "use strict";

  const gettext = window.gettext || ((s) => s);
  const ngettext = window.ngettext || ((s, p, n) => (n === 1 ? s : p));
  const interpolate = window.interpolate || ((f, a) => f.replace(/%s/g, () => String(a.shift())));

  // URL parameter ↔ form field.  "attr" repeats in the URL (one key=value each), comma-separated in the field.
  const FILTERS = ["mode", "document", "kind", "uploaded_after", "uploaded_before", "attr"];

  function init() {
    const main = document.getElementById("main");
    const form = document.getElementById("search-form");
    if (!main || !form || !window.Cairn) return;
    const C = window.Cairn;
    const collectionId = main.getAttribute("data-collection-id");
    const input = document.getElementById("search-query");
    const results = document.getElementById("search-results");
    const button = form.querySelector('button[type="submit"]');
    const filters = document.getElementById("search-filters");
    const count = document.getElementById("search-filter-count");
    const field = function (name) { return form.elements.namedItem(name); };

    /** The attribute field as key=value pairs; a pair without "=" is shown as an error. */
    function attributePairs() {
      return field("attr").value.split(/[,，]/).map(function (p) { return p.trim(); }).filter(Boolean);
    }

    /** The form's filters as [name, value] pairs (only those set). */
    function chosen() {
      const pairs = [];
      FILTERS.forEach(function (name) {
        if (name === "attr") {
          attributePairs().forEach(function (pair) { pairs.push(["attr", pair]); });
          return;
        }
        const value = field(name).value;
        if (value && !(name === "mode" && value === "hybrid")) pairs.push([name, value]);
      });
      return pairs;
    }

    function showCount() {
      const n = chosen().length;
      count.textContent = n ? interpolate(ngettext("(%s set)", "(%s set)", n), [n]) : "";
    }

    /** Fill the form from the URL (a reload, Back or Forward). */
    function fromUrl() {
      const params = new URLSearchParams(window.location.search);
      input.value = (params.get("q") || "").trim();
      FILTERS.forEach(function (name) {
        if (name === "attr") field(name).value = params.getAll("attr").join(", ");
        else field(name).value = params.get(name) || (name === "mode" ? "hybrid" : "");
      });
      if (chosen().length) filters.open = true;
      showCount();
      return input.value;
    }

    function invalid(message, element) {
      C.showAlert(results, message);
      if (element) { element.setAttribute("aria-invalid", "true"); element.focus(); }
    }

    function run(query, push) {
      const bad = attributePairs().filter(function (p) { return !/^[A-Za-z_][A-Za-z0-9_]*\s*=/.test(p); });
      if (bad.length) {
        filters.open = true;
        invalid(interpolate(gettext("Write each attribute filter as key=value (not “%s”)."), [bad[0]]), field("attr"));
        return;
      }
      field("attr").removeAttribute("aria-invalid");
      const pairs = chosen();
      const url = new URL(window.location.href);
      url.searchParams.set("q", query);
      FILTERS.forEach(function (name) { url.searchParams.delete(name); });
      pairs.forEach(function (pair) { url.searchParams.append(pair[0], pair[1]); });
      const target = url.pathname + url.search + url.hash;
      if (push && target !== window.location.pathname + window.location.search + window.location.hash) {
        window.history.pushState({ cairnSearch: true }, "", target);  // Back returns to the search before
      } else {
        window.history.replaceState(window.history.state, "", target);
      }
      const params = new URLSearchParams({ q: query, collection: collectionId, k: "20" });
      pairs.forEach(function (pair) { params.append(pair[0], pair[1]); });
      C.setBusy(button, true);
      results.replaceChildren(C.loading(gettext("Searching…")));
      C.api("GET", "/api/v1/search?" + params.toString())
        .then(function (data) { render(query, pairs.length > 0, data || {}); })
        .catch(function (error) { C.showAlert(results, error.message); })
        .then(function () { C.setBusy(button, false); });
    }

    function render(query, filtered, data) {
      const el = C.el;
      const items = data.results || [];
      if (!items.length) {
        results.replaceChildren(el("p", { class: "empty" }, filtered
          ? interpolate(gettext("No passages in the documents you can read match “%s” with these filters."), [query])
          : interpolate(gettext("No passages in the documents you can read match “%s”."), [query])));
        return;
      }
      const parts = [];
      const groups = data.groups && data.groups.length ? data.groups : items.map(function (r, i) {
        return { document_id: r.document_id, title: r.title, results: [i] };
      });
      parts.push(el("p", { class: "results-summary" },
        interpolate(ngettext("%s passage", "%s passages", items.length), [C.num(items.length)]) + " · " +
        interpolate(ngettext("%s document", "%s documents", groups.length), [C.num(groups.length)]) + " · " +
        interpolate(gettext("for “%s”"), [query])));
      if (data.no_good_match) {
        parts.push(el("p", { class: "notice", "data-role": "no-good-match" },
          interpolate(gettext("Nothing in the documents you can read matches “%s” well. The closest passages are below; they may not be relevant."), [query])));
      }
      // Relevance relative to the best result of this search: the fused score means nothing across searches.
      const top = Math.max.apply(null, items.map(function (r) { return Number(r.score) || 0; })) || 1;
      const list = el("ol", { class: "results" + (data.no_good_match ? " results--weak" : ""), role: "list" });
      groups.forEach(function (group) {
        const passages = el("ol", { class: "result__passages", role: "list" });
        group.results.forEach(function (index) {
          const r = items[index];
          const meta = [];
          if (r.page !== null && r.page !== undefined) meta.push(el("span", null, interpolate(gettext("Page %s"), [r.page])));
          if (r.heading) meta.push(el("span", null, r.heading));
          const relative = Math.max(0, Math.min(1, (Number(r.score) || 0) / top));
          meta.push(el("span", { class: "relevance" }, gettext("Relevance") + " ",
            el("meter", { min: 0, max: 1, value: relative.toFixed(3), "aria-label": gettext("Relevance compared with the best result") })));
          meta.push(el("a", { href: C.passageUrl(r.document_id, r.chunk_id), class: "result__open" }, gettext("Open passage")));
          passages.appendChild(el("li", { class: "result__passage" },
            el("div", { class: "result__meta" }, meta),
            el("p", { class: "result__text" }, C.highlighted(C.reflow(r.text), r.highlights))));
        });
        const best = items[group.results[0]];
        list.appendChild(el("li", { class: "result", "data-document-id": group.document_id },
          el("a", { class: "result__title", href: C.passageUrl(best.document_id, best.chunk_id) }, group.title),
          group.results.length > 1 ? el("span", { class: "muted small" }, " · " +
            interpolate(ngettext("%s passage", "%s passages", group.results.length), [C.num(group.results.length)])) : null,
          passages));
      });
      parts.push(list);
      results.replaceChildren.apply(results, parts);
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const query = input.value.trim();
      if (!query) {
        invalid(gettext("Type something to search for."), input);
        return;
      }
      input.removeAttribute("aria-invalid");
      run(query, true);
    });
    form.addEventListener("change", showCount);
    form.addEventListener("input", showCount);
    document.getElementById("search-clear").addEventListener("click", function () {
      FILTERS.forEach(function (name) { field(name).value = name === "mode" ? "hybrid" : ""; });
      showCount();
      if (input.value.trim()) run(input.value.trim(), true);
    });
    window.addEventListener("popstate", function () {
      const query = fromUrl();
      if (query) run(query, false); else results.replaceChildren();
    });
    const initial = fromUrl();
    if (initial) run(initial, false);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
