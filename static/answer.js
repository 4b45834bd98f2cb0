/* Answers: the text rendered as safe Markdown with clickable [n] markers, and the bar under it —
 * the model that wrote it, a mark when it was cut at the token limit, Copy, Regenerate, and
 * thumbs up / down with an optional comment (POST /api/v1/feedback).
 *
 * Uses window.Cairn (static/cairn.js) and window.CairnMarkdown (static/markdown.js).
 */
(function () {
  "use strict";

  const gettext = window.gettext || ((s) => s);
  const ngettext = window.ngettext || ((s, p, n) => (n === 1 ? s : p));
  const interpolate = window.interpolate || ((f, a) => f.replace(/%s/g, () => String(a.shift())));
  void ngettext;

  const MAX_COMMENT = 2000;

  function el() { return window.Cairn.el.apply(null, arguments); }

  /** A [n] / [n, m] marker as links that open the cited passage (null: no such source, leave the text). */
  function citationMarker(numbers, known) {
    const list = numbers.split(/\s*[,;]\s*/);
    if (!list.some(function (n) { return known[n]; })) return null;
    const sup = el("sup");
    sup.appendChild(document.createTextNode("["));
    list.forEach(function (n, i) {
      if (i) sup.appendChild(document.createTextNode(", "));
      sup.appendChild(known[n]
        ? el("a", { class: "cite-ref", href: "#cite-" + n, "data-number": n, "aria-haspopup": "dialog",
                    "aria-label": interpolate(gettext("Source %s: %s (opens the passage beside the answer)"), [n, known[n].title]) }, n)
        : document.createTextNode(n));
    });
    sup.appendChild(document.createTextNode("]"));
    return sup;
  }

  // Thumb icons drawn as SVG (Feather icons' outlines, MIT): an emoji needs an emoji font, which many
  // desktops of an intranet, and headless browsers, do not have (the buttons then showed empty boxes).
  const THUMB_UP = "M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3";
  const THUMB_DOWN = "M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17";

  function thumb(path) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    [["viewBox", "0 0 24 24"], ["width", "16"], ["height", "16"], ["fill", "none"], ["stroke", "currentColor"],
     ["stroke-width", "2"], ["stroke-linecap", "round"], ["stroke-linejoin", "round"], ["aria-hidden", "true"],
     ["focusable", "false"]].forEach(function (pair) { svg.setAttribute(pair[0], pair[1]); });
    const line = document.createElementNS(ns, "path");
    line.setAttribute("d", path);
    svg.appendChild(line);
    return svg;
  }

  /** The answer's text as Markdown nodes, its markers linked to ``known`` citations (by number). */
  function body(text, known) {
    return window.CairnMarkdown.render(text, { citation: function (numbers) { return citationMarker(numbers, known || {}); } });
  }

  /** Copy ``text``: the clipboard API where the page may use it, else a hidden textarea and execCommand. */
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return legacyCopy(text); });
    }
    return legacyCopy(text);
  }

  function legacyCopy(text) {
    return new Promise(function (resolve, reject) {
      const area = el("textarea", { class: "visually-hidden", readonly: true, "aria-hidden": "true" });
      area.value = text;
      document.body.appendChild(area);
      area.select();
      let ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      area.remove();
      if (ok) resolve(); else reject(new Error(gettext("Copying is not allowed here; select the text and copy it.")));
    });
  }

  /** The question's conversation turn (its id), found once the stream has ended and the server kept it. */
  function findTurn(context) {
    if (context.turn) return Promise.resolve(context.turn);
    if (!context.conversation) return Promise.resolve(null);
    return window.Cairn.api("GET", "/api/v1/conversations/" + encodeURIComponent(context.conversation)).then(function (conversation) {
      const turns = (conversation && conversation.turns) || [];
      for (let i = turns.length - 1; i >= 0; i--) {
        if (turns[i].question === context.question && turns[i].state === "answered") {
          context.turn = turns[i].id;
          return context.turn;
        }
      }
      return null;
    }, function () { return null; });
  }

  function sendFeedback(context, rating, comment) {
    return findTurn(context).then(function (turn) {
      const payload = turn
        ? { turn: turn, rating: rating, comment: comment }
        : { collection: Number(context.collection), question: context.question, answer: context.data.answer || "",
            chunks: (context.data.citations || []).map(function (c) { return c.chunk_id; }),
            model: context.data.model || "", rating: rating, comment: comment };
      return window.Cairn.api("POST", "/api/v1/feedback", payload);
    });
  }

  /** The bar under an answer.  ``context``: {data, question, collection, conversation?, turn?, regenerate?()}. */
  function toolbar(context) {
    const data = context.data || {};
    const bar = el("div", { class: "answer-bar", "data-role": "answer-bar" });
    const info = el("div", { class: "answer-bar__info" });
    if (data.model) {
      info.appendChild(el("span", { class: "badge badge--label", "data-role": "answer-model", title: gettext("The model that wrote this answer") },
        interpolate(gettext("Model: %s"), [data.model])));
    }
    if (data.truncated || data.finish_reason === "length") {
      info.appendChild(el("span", { class: "badge badge--warn", "data-role": "answer-truncated",
                                    title: gettext("The model reached its limit on answer length before it finished.") },
        gettext("Cut at the token limit")));
    }
    const status = el("span", { class: "answer-bar__status muted small", role: "status", "aria-live": "polite" });
    const actions = el("div", { class: "answer-bar__actions" });

    const copy = el("button", { type: "button", class: "button button--small", "data-action": "copy-answer" }, gettext("Copy"));
    copy.addEventListener("click", function () {
      copyText(data.answer || "").then(function () { status.textContent = gettext("Copied."); },
                                        function (error) { status.textContent = error.message; });
    });
    actions.appendChild(copy);

    if (context.regenerate) {
      const again = el("button", { type: "button", class: "button button--small", "data-action": "regenerate",
                                   title: gettext("Ask the same question again, as a new turn of this conversation") },
        gettext("Regenerate"));
      again.addEventListener("click", function () { context.regenerate(); });
      actions.appendChild(again);
    }

    const rate = el("div", { class: "answer-bar__rate", role: "group", "aria-label": gettext("Was this answer helpful?") });
    const up = el("button", { type: "button", class: "button button--small", "data-rating": "up", "aria-pressed": "false",
                              "aria-label": gettext("Helpful") }, thumb(THUMB_UP));
    const down = el("button", { type: "button", class: "button button--small", "data-rating": "down", "aria-pressed": "false",
                                "aria-label": gettext("Not helpful") }, thumb(THUMB_DOWN));
    rate.appendChild(up);
    rate.appendChild(down);
    actions.appendChild(rate);

    const form = el("form", { class: "answer-feedback form", "data-role": "feedback-form", hidden: true });
    const commentId = "feedback-comment-" + Math.random().toString(36).slice(2);
    const comment = el("textarea", { id: commentId, rows: 2, maxlength: MAX_COMMENT });
    const send = el("button", { type: "submit", class: "button button--small button--primary" }, gettext("Send feedback"));
    form.appendChild(el("label", { for: commentId, class: "small" }, gettext("Comment (optional)")));
    form.appendChild(comment);
    form.appendChild(send);
    let rating = null;

    function submit(withComment) {
      window.Cairn.setBusy(send, true);
      return sendFeedback(context, rating, withComment ? comment.value.trim().slice(0, MAX_COMMENT) : "")
        .then(function () {
          status.textContent = gettext("Thank you — your feedback was saved.");
          if (withComment) form.hidden = true;
        }, function (error) { status.textContent = error.message; })
        .then(function () { window.Cairn.setBusy(send, false); });
    }

    [up, down].forEach(function (button) {
      button.addEventListener("click", function () {
        rating = button.getAttribute("data-rating");
        up.setAttribute("aria-pressed", String(rating === "up"));
        down.setAttribute("aria-pressed", String(rating === "down"));
        form.hidden = false;
        submit(false).then(function () { comment.focus(); });
      });
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (rating) submit(true);
    });

    bar.appendChild(info);
    bar.appendChild(actions);
    bar.appendChild(status);
    bar.appendChild(form);
    return bar;
  }

  window.CairnAnswer = { body: body, toolbar: toolbar, copyText: copyText };
})();
