/*
 * logit-lens report viewer: renders one LensReport (src/outputs/report.ts, docs/lens-json.md) into
 * a DOM element. Plain browser JavaScript, no dependencies, no network: the self-contained HTML
 * export (src/outputs/html.ts) inlines this file, and the web app can load it with a script element.
 *
 *   const view = LensView.renderLensReport(rootElement, report);
 *   view.select("final" | layerIndex, columnIndex);   // pin a cell (as a click does)
 *   view.selectPosition(columnIndex);                 // position shown by the chart
 *
 * Stable hooks (tests and the web app rely on them):
 *   td.cell[data-layer][data-position][data-hook][data-row]   heatmap cells (data-layer "final"
 *                                                              and data-row "final" on the output row)
 *   th.col-head[data-position]                                 column headers (input tokens)
 *   #cell-details                                              details panel; .top-entry[data-token-id]
 *                                                              [data-prob] rows, .target-entry, .family-entry
 *   #lens-chart svg path.series-target / .series-family / .series-top1   chart lines
 *   #lens-text .ll-span[data-tokens]                           reassembled text spans
 * Token text is always set with textContent, never parsed as HTML.
 */
(function (global) {
  "use strict";

  /** @typedef {number | "final"} RowKey  a heatmap row: an index into report.layers, or the output */

  var SVG_NS = "http://www.w3.org/2000/svg";
  var POINT_SHORT = { embed: "embed", resid_pre: "pre", resid_mid: "mid", resid_post: "post", attn_out: "attn", mlp_out: "mlp" };
  var POINT_ORDER = ["embed", "resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"];
  var PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
  // Sequential colour scale (light to dark blue), stops at t = 0, 0.2, ... 1.
  var STOPS = [
    [247, 251, 255],
    [214, 230, 244],
    [158, 202, 225],
    [74, 152, 201],
    [33, 102, 172],
    [8, 48, 107],
  ];
  var LOG_FLOOR = 1e-6; // log colour scale: probabilities at or below this get the lightest colour

  // ---------------------------------------------------------------- helpers

  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function s(tag, attrs, children) {
    var el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (var k in attrs) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.setAttribute("class", v);
      else if (k === "text") el.textContent = String(v);
      else if (k === "style") el.style.cssText = v;
      else if (k.slice(0, 2) === "on" && typeof v === "function") el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }

  function append(el, children) {
    if (children === null || children === undefined || children === false) return;
    if (!Array.isArray(children)) children = [children];
    for (var i = 0; i < children.length; i++) {
      var c = children[i];
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) append(el, c);
      else el.append(typeof c === "object" ? c : String(c));
    }
  }

  /** Probability as a percentage: "96.02%", "0.14%", "3.4e-22%". */
  function formatProb(p) {
    if (typeof p !== "number" || !isFinite(p)) return "—";
    if (p <= 0) return "0%";
    var pct = p * 100;
    if (pct >= 1) return pct.toFixed(2) + "%";
    if (pct >= 1e-3) return pct.toPrecision(2) + "%";
    return pct.toExponential(1) + "%";
  }

  function formatNum(x, digits) {
    if (typeof x !== "number" || !isFinite(x)) return "—";
    return x.toFixed(digits);
  }

  /** Lowercase hex "20f09f" -> "20 f0 9f". */
  function spacedHex(hex) {
    return (hex || "").replace(/(..)(?=.)/g, "$1 ");
  }

  function colorAt(t) {
    t = Math.max(0, Math.min(1, t));
    var x = t * (STOPS.length - 1);
    var i = Math.min(STOPS.length - 2, Math.floor(x));
    var f = x - i;
    var a = STOPS[i];
    var b = STOPS[i + 1];
    return "rgb(" + [0, 1, 2].map(function (k) { return Math.round(a[k] + (b[k] - a[k]) * f); }).join(",") + ")";
  }

  function scaleT(p, log) {
    if (typeof p !== "number" || !isFinite(p) || p <= 0) return 0;
    if (!log) return p;
    var lo = Math.log10(LOG_FLOOR);
    return Math.max(0, (Math.log10(p) - lo) / -lo);
  }

  function gradientCss() {
    var parts = [];
    for (var i = 0; i <= 10; i++) parts.push(colorAt(i / 10) + " " + i * 10 + "%");
    return "linear-gradient(to right, " + parts.join(", ") + ")";
  }

  function rowName(layer) {
    if (!layer) return "output";
    if (layer.point === "embed") return "embed";
    return "L" + layer.layer + " " + (POINT_SHORT[layer.point] || layer.point);
  }

  function rowTitle(layer) {
    if (!layer) return "output (the model's own prediction)";
    if (layer.point === "embed") return "embeddings (hook_embed)";
    return "layer " + layer.layer + " · " + layer.point;
  }

  // ---------------------------------------------------------------- the view

  function renderLensReport(root, report, options) {
    options = options || {};
    var layers = report.layers || [];
    var positions = report.positions || [];
    var tokens = report.tokens || [];
    var targets = report.targets || [];
    var families = report.families || [];
    var points = uniquePoints(layers);
    var nCols = positions.length;
    var colOfPosition = new Map();
    positions.forEach(function (p, i) { colOfPosition.set(p, i); });

    var state = {
      outputOnTop: options.outputOnTop !== undefined ? Boolean(options.outputOnTop) : true,
      point: "all",
      colorBy: "top1",
      logColor: false,
      chartLog: true,
      pinned: { row: /** @type {RowKey} */ ("final"), col: nCols - 1 },
      position: nCols - 1,
      hover: null,
    };

    function cellAt(row, col) {
      return row === "final" ? report.final.positions[col] : layers[row].positions[col];
    }
    /** @returns {RowKey[]} */
    function layerRows() {
      /** @type {RowKey[]} */
      var rows = [];
      for (var i = 0; i < layers.length; i++) if (state.point === "all" || layers[i].point === state.point) rows.push(i);
      return rows;
    }
    /** Rows in display order (row = layer index or "final"). @returns {RowKey[]} */
    function displayRows() {
      var rows = layerRows();
      if (state.outputOnTop) return /** @type {RowKey[]} */ (["final"]).concat(rows.slice().reverse());
      return rows.concat(["final"]);
    }

    root.textContent = "";
    root.classList.add("ll-root");

    // ---------------------------------------------------------- header
    var m = report.model || {};
    var gen = report.generation;
    var header = h("header", { class: "ll-header" }, [
      h("div", { class: "ll-title" }, [
        h("h1", null, ["logit lens ", h("span", { class: "ll-model", text: m.name })]),
        h("span", { class: "ll-badge", text: report.lens.variant === "raw" ? "raw unembedding" : "logit lens" }),
        report.chat ? h("span", { class: "ll-badge", text: "chat template" }) : null,
        gen ? h("span", { class: "ll-badge ll-badge-gen", text: "generation" }) : null,
      ]),
      h("div", { class: "ll-meta" }, [
        meta("model", m.architecture + ", " + m.n_layers + " layers, hidden " + m.hidden_size + ", vocab " + Number(m.vocab_size).toLocaleString("en-US")),
        meta("lens", report.lens.description),
        meta("readouts", (report.lens.points || []).join(", ") + " · top-" + report.lens.top_k + " per cell"),
        gen
          ? meta(
              "generation",
              "max " + gen.max_new_tokens + " new tokens, " + (gen.temperature === 0 ? "greedy" : "temperature " + gen.temperature + ", top-p " + gen.top_p + ", seed " + gen.seed) + " · stopped by " + gen.stop_reason,
            )
          : null,
        meta("source", m.source, "ll-source"),
      ]),
      h("div", { class: "ll-prompt" }, [h("span", { class: "ll-label", text: "prompt" }), h("span", { class: "ll-prompt-text", text: report.prompt })]),
    ]);
    function meta(label, value, cls) {
      return h("div", { class: "ll-meta-item " + (cls || "") }, [h("span", { class: "ll-label", text: label }), h("span", { text: value })]);
    }

    // ---------------------------------------------------------- text (bytes reassembled)
    var textBox = h("div", { class: "ll-text", id: "lens-text" });
    var spanEls = [];
    (report.spans || []).forEach(function (sp) {
      var a = sp.tokens[0];
      var b = sp.tokens[1];
      var ts = tokens.slice(a, b + 1);
      var generated = ts.length > 0 && ts.every(function (t) { return t.generated; });
      var special = ts.length > 0 && ts.every(function (t) { return t.special; });
      var cls = "ll-span" + (generated ? " generated" : "") + (special ? " special" : "") + (sp.complete ? "" : " partial") + (a !== b ? " multi" : "");
      var title =
        (a === b ? "token " + a : "tokens " + a + "–" + b) +
        ": " + ts.map(function (t) { return t.text; }).join(" ") +
        "\nbytes: " + ts.map(function (t) { return spacedHex(t.bytes); }).join(" | ");
      var el = h("span", { class: cls, "data-tokens": a + "-" + b, title: title, text: sp.text });
      el.addEventListener("mouseenter", function () { highlightColumns(a, b, true); });
      el.addEventListener("mouseleave", function () { highlightColumns(a, b, false); });
      el.addEventListener("click", function () {
        for (var p = b; p >= a; p--) {
          if (colOfPosition.has(p)) {
            var col = colOfPosition.get(p);
            selectPosition(col);
            var th = thead.querySelector('th.col-head[data-col="' + col + '"]');
            if (th) th.scrollIntoView({ block: "nearest", inline: "center" });
            return;
          }
        }
      });
      spanEls.push(el);
      textBox.append(el);
    });
    var textCard = h("section", { class: "ll-card ll-text-card" }, [
      h("div", { class: "ll-card-head" }, [
        h("h2", { text: "Text" }),
        h("span", { class: "ll-hint", text: "prompt and generation, bytes reassembled across tokens · hover a piece to find its columns, click to select it" }),
        h("span", { class: "ll-chips" }, [
          h("span", { class: "ll-chip", text: "prompt" }),
          gen || tokens.some(function (t) { return t.generated; }) ? h("span", { class: "ll-chip generated", text: "generated" }) : null,
          tokens.some(function (t) { return t.special; }) ? h("span", { class: "ll-chip special", text: "special token" }) : null,
        ]),
      ]),
      textBox,
    ]);

    // ---------------------------------------------------------- controls
    var pointSelect = points.length > 1
      ? h("select", { id: "ll-point", "aria-label": "readout point" }, [h("option", { value: "all", text: "all points" })].concat(points.map(function (p) { return h("option", { value: p, text: p }); })))
      : null;
    var colorSelect = h("select", { id: "ll-color-by", "aria-label": "colour cells by" }, [
      h("option", { value: "top1", text: "top-1 probability" }),
      targets.map(function (t, i) { return h("option", { value: "target:" + i, text: "target “" + t.label + "” (first token)" }); }),
      families.map(function (f, i) { return h("option", { value: "family:" + i, text: "family " + f.label }); }),
    ]);
    var logColorBox = h("input", { type: "checkbox", id: "ll-log-color" });
    var orderButton = h("button", { type: "button", id: "ll-order", class: "ll-button" });
    var legendTicks = h("div", { class: "ll-legend-ticks" });
    var legend = h("div", { class: "ll-legend", id: "ll-legend" }, [
      h("span", { class: "ll-legend-label", id: "ll-legend-label" }),
      h("div", { class: "ll-legend-body" }, [h("div", { class: "ll-legend-bar", style: "background:" + gradientCss() }), legendTicks]),
      h("span", { class: "ll-legend-note" }, [h("b", { text: "bold" }), " = the token that actually came next"]),
    ]);
    var controls = h("div", { class: "ll-controls" }, [
      pointSelect ? h("label", null, ["show ", pointSelect]) : null,
      h("label", null, ["colour by ", colorSelect]),
      h("label", null, [logColorBox, " log colour scale"]),
      orderButton,
      legend,
    ]);

    // ---------------------------------------------------------- heatmap
    var thead = h("thead");
    var tbody = h("tbody");
    var table = h("table", { class: "ll-heatmap", id: "lens-heatmap" }, [thead, tbody]);
    var scroller = h("div", { class: "ll-heatmap-scroll", id: "lens-heatmap-scroll", tabindex: "0" }, table);
    var cellEls = new Map(); // "row:col" -> td
    var headEls = [];
    var corner = h("th", { class: "ll-corner" });
    var headRow = h("tr", null, corner);
    for (var c = 0; c < nCols; c++) {
      var p = positions[c];
      var t = tokens[p] || { text: "?", bytes: "" };
      var next = tokens[p + 1];
      var th = h(
        "th",
        {
          class: "col-head" + (t.generated ? " generated" : "") + (t.special ? " special" : ""),
          "data-position": p,
          "data-col": c,
          title: "position " + p + ": " + t.text + " (bytes " + spacedHex(t.bytes) + ")" + (next ? "\npredicts the next token; actually next: " + next.text : "\nlast token: predicts what comes next"),
        },
        [h("span", { class: "ll-pos", text: p }), h("span", { class: "ll-tok", text: t.text }), h("span", { class: "ll-next", text: next ? "→ " + next.text : "→ ?" })],
      );
      headEls.push(th);
      headRow.append(th);
    }
    thead.append(headRow);

    function buildBody() {
      tbody.textContent = "";
      cellEls.clear();
      var rows = displayRows();
      corner.textContent = "";
      append(corner, [
        h("span", { class: "ll-corner-main", text: "readout \\ position" }),
        h("span", { class: "ll-corner-sub", text: state.outputOnTop ? "output on top, layer 0 at the bottom" : "layer 0 on top, output at the bottom" }),
      ]);
      for (var r = 0; r < rows.length; r++) {
        var row = rows[r];
        var layer = row === "final" ? null : layers[row];
        var prevLayer = r > 0 && rows[r - 1] !== "final" ? layers[rows[r - 1]] : null;
        var tr = h("tr", {
          class: "ll-row" + (row === "final" ? " final-row" : "") + (layer && prevLayer && layer.layer !== prevLayer.layer ? " layer-start" : ""),
          "data-row": row,
          "data-layer": layer ? layer.layer : "final",
          "data-hook": layer ? layer.hook : "final",
          "data-point": layer ? layer.point : "final",
        });
        tr.append(h("th", { class: "row-label point-" + (layer ? layer.point : "final"), title: layer ? layer.hook : "the model's output (logits)", text: rowName(layer) }));
        for (var c2 = 0; c2 < nCols; c2++) {
          var cell = cellAt(row, c2);
          var top = cell && cell.top && cell.top[0];
          var nextTok = tokens[positions[c2] + 1];
          var hit = top && nextTok && top.id === nextTok.id;
          var td = h("td", {
            class: "cell" + (hit ? " hit" : ""),
            "data-row": row,
            "data-layer": layer ? layer.layer : "final",
            "data-hook": layer ? layer.hook : "final",
            "data-position": positions[c2],
            "data-col": c2,
            text: top ? top.in_context || top.text : "",
          });
          cellEls.set(row + ":" + c2, td);
          tr.append(td);
        }
        tbody.append(tr);
      }
      colorCells();
      markPinned();
    }

    function metricOf(cell) {
      if (!cell) return NaN;
      var cb = state.colorBy;
      if (cb === "top1") return cell.top && cell.top[0] ? cell.top[0].prob : NaN;
      var idx = Number(cb.split(":")[1]);
      if (cb.indexOf("target:") === 0) return cell.targets && cell.targets[idx] ? cell.targets[idx].prob : NaN;
      return cell.families ? cell.families[idx] : NaN;
    }

    function colorCells() {
      cellEls.forEach(function (td, key) {
        var parts = key.split(":");
        var row = parts[0] === "final" ? "final" : Number(parts[0]);
        var t = scaleT(metricOf(cellAt(row, Number(parts[1]))), state.logColor);
        td.style.background = colorAt(t);
        td.classList.toggle("dark", t > 0.52);
      });
      var label = colorSelect.options[colorSelect.selectedIndex].text;
      legendLabel.textContent = label;
      legendTicks.textContent = "";
      /** @type {[number, string][]} */
      var ticks = state.logColor ? [[0, "≤1e-6"], [1 / 3, "1e-4"], [2 / 3, "1%"], [1, "100%"]] : [[0, "0%"], [0.25, "25%"], [0.5, "50%"], [0.75, "75%"], [1, "100%"]];
      ticks.forEach(function (tk) { legendTicks.append(h("span", { style: "left:" + tk[0] * 100 + "%", text: tk[1] })); });
    }
    var legendLabel = legend.querySelector(".ll-legend-label");

    // ---------------------------------------------------------- details panel
    var details = h("aside", { id: "cell-details", class: "ll-card ll-details", "aria-live": "polite" });

    function renderDetails(row, col, mode) {
      details.textContent = "";
      var cell = cellAt(row, col);
      if (!cell) return;
      var layer = row === "final" ? null : layers[row];
      var p = positions[col];
      var tok = tokens[p] || { text: "?", bytes: "" };
      var next = tokens[p + 1];
      details.setAttribute("data-row", row);
      details.setAttribute("data-layer", layer ? layer.layer : "final");
      details.setAttribute("data-hook", layer ? layer.hook : "final");
      details.setAttribute("data-position", p);
      details.setAttribute("data-mode", mode);
      details.append(
        h("div", { class: "ll-details-head" }, [
          h("div", { class: "ll-details-title" }, [
            h("h2", { text: rowTitle(layer) }),
            h("span", { class: "ll-mode " + mode, text: mode === "pinned" ? "pinned" : "hover" }),
          ]),
          h("code", { class: "ll-hook", text: layer ? layer.hook : "logits (final norm + unembedding of the last layer)" }),
          h("div", { class: "ll-details-pos" }, [
            "position " + p + " · input ",
            h("span", { class: "ll-tokbox", text: tok.text }),
            h("span", { class: "ll-bytes", text: spacedHex(tok.bytes) }),
          ]),
          h("div", { class: "ll-details-pos" }, next
            ? ["actually next ", h("span", { class: "ll-tokbox", text: next.text }), next.generated ? h("span", { class: "ll-small", text: "(generated)" }) : null]
            : ["last token: the prediction is for what comes next"]),
          h("div", { class: "ll-details-pos ll-row-text" }, [
            "this row's top-1 tokens read ",
            h("span", { class: "ll-tokbox", title: "the top-1 tokens of every position in this row, bytes joined and decoded", text: (layer ? layer.top1_text : report.final.top1_text) || "" }),
          ]),
          h("div", { class: "ll-stats" }, [
            h("span", null, ["entropy ", h("b", { class: "ll-entropy", text: formatNum(cell.entropy, 3) }), " nats"]),
            h("span", null, ["KL to final ", h("b", { class: "ll-kl", text: row === "final" ? "—" : formatNum(cell.kl_to_final, 3) }), row === "final" ? "" : " nats"]),
          ]),
        ]),
      );
      // top-k
      var maxProb = cell.top.length ? cell.top[0].prob : 1;
      var topBody = h("tbody");
      cell.top.forEach(function (e, k) {
        var isNext = next && e.id === next.id;
        topBody.append(
          h("tr", { class: "top-entry" + (isNext ? " is-next" : ""), "data-token-id": e.id, "data-prob": e.prob, "data-logit": e.logit }, [
            h("td", { class: "rank", text: k + 1 }),
            // A byte that finishes the character the context left open reads as that character.
            h("td", { class: "tok" }, e.in_context ? [h("span", { class: "ll-tokbox", text: e.text }), " → ", h("span", { class: "ll-tokbox in-context", title: "read after the context's unfinished character", text: e.in_context })] : h("span", { class: "ll-tokbox", text: e.text })),
            h("td", { class: "bytes", text: spacedHex(e.bytes) }),
            h("td", { class: "prob", style: "--w:" + Math.max(0, Math.min(1, e.prob / Math.max(maxProb, 1e-12))) * 100 + "%", text: formatProb(e.prob) }),
            h("td", { class: "logit", text: formatNum(e.logit, 2) }),
          ]),
        );
      });
      details.append(
        h("h3", { text: "Top " + cell.top.length + " tokens" }),
        h("table", { class: "ll-topk" }, [
          h("thead", null, h("tr", null, [h("th", { text: "#" }), h("th", { text: "token" }), h("th", { text: "bytes" }), h("th", { class: "prob", text: "prob" }), h("th", { class: "logit", text: "logit" })])),
          topBody,
        ]),
      );
      if (targets.length && cell.targets) {
        var tb = h("tbody");
        targets.forEach(function (t, i) {
          var v = cell.targets[i];
          // The whole string at this very layer (chain product), else the output's sequence probability.
          var seq = v && typeof v.sequence_prob === "number" ? v.sequence_prob : row === "final" && t.ids.length > 1 && t.sequence_probs ? t.sequence_probs[col] : undefined;
          tb.append(
            h("tr", { class: "target-entry", "data-target": i, "data-prob": v ? v.prob : "", "data-rank": v ? v.rank : "" }, [
              h("td", null, [h("span", { class: "ll-swatch", style: "background:" + PALETTE[i % PALETTE.length] }), h("span", { class: "ll-tokbox", text: t.label })]),
              h("td", { class: "ll-small", text: t.tokens.length > 1 ? "first of " + t.tokens.length + ": " + t.tokens[0].text : t.tokens[0] ? t.tokens[0].text : "" }),
              h("td", { class: "prob", text: v ? formatProb(v.prob) : "—" }),
              h("td", { class: "rank", title: "rank 1 = the top token", text: v ? "#" + (v.rank + 1).toLocaleString("en-US") : "—" }),
            ]),
          );
          if (seq !== undefined) tb.append(h("tr", { class: "target-seq" }, [h("td", { colspan: 2, class: "ll-small", text: "whole sequence “" + t.label + "” (teacher-forced)" }), h("td", { class: "prob", text: formatProb(seq) }), h("td")]));
        });
        details.append(
          h("h3", { text: "Tracked targets" }),
          h("table", { class: "ll-targets" }, [h("thead", null, h("tr", null, [h("th", { text: "target" }), h("th", { text: "token read" }), h("th", { class: "prob", text: "prob" }), h("th", { text: "rank" })])), tb]),
        );
      }
      if (families.length && cell.families) {
        var fb = h("tbody");
        families.forEach(function (f, i) {
          fb.append(
            h("tr", { class: "family-entry", "data-family": i, "data-prob": cell.families[i], title: f.description }, [
              h("td", null, [h("span", { class: "ll-swatch dashed", style: "border-color:" + familyColor(i) }), f.label]),
              h("td", { class: "ll-small", text: f.size.toLocaleString("en-US") + " tokens" }),
              h("td", { class: "prob", text: formatProb(cell.families[i]) }),
            ]),
          );
        });
        details.append(h("h3", { text: "Token families (summed probability)" }), h("table", { class: "ll-families" }, fb));
      }
      details.append(h("p", { class: "ll-hint", text: "Hover a cell to inspect it, click to pin it; arrow keys move the pinned cell. Position p predicts token p + 1." }));
    }

    // ---------------------------------------------------------- chart
    var chartSvgBox = h("div", { class: "ll-chart-svg" });
    var chartReadout = h("div", { class: "ll-chart-readout" });
    var chartLegend = h("div", { class: "ll-chart-legend" });
    var chartTitle = h("h2");
    var posSelect = h("select", { id: "ll-position", "aria-label": "position" });
    positions.forEach(function (p, i) {
      var t = tokens[p] || { text: "?" };
      posSelect.append(h("option", { value: i, text: p + " · " + t.text }));
    });
    var chartLogBox = h("input", { type: "checkbox", id: "ll-chart-log", checked: true });
    var chart = h("section", { class: "ll-card ll-chart", id: "lens-chart" }, [
      h("div", { class: "ll-card-head" }, [chartTitle, h("label", null, ["position ", posSelect]), h("label", null, [chartLogBox, " log scale"])]),
      chartSvgBox,
      chartReadout,
      chartLegend,
    ]);

    function familyColor(i) {
      return PALETTE[(targets.length + i) % PALETTE.length];
    }

    function renderChart() {
      var col = state.position;
      var p = positions[col];
      var tok = tokens[p] || { text: "?" };
      chartTitle.textContent = "";
      append(chartTitle, ["Probability across layers at position " + p + " ", h("span", { class: "ll-tokbox", text: tok.text })]);
      posSelect.value = String(col);
      chartSvgBox.textContent = "";
      chartLegend.textContent = "";
      chartReadout.textContent = "";

      var rows = layerRows().concat(["final"]);
      /** @type {{kind: string, index: number, label: string, color: string, values: number[], dashed?: boolean, thin?: boolean}[]} */
      var series = [];
      targets.forEach(function (t, i) {
        series.push({ kind: "target", index: i, label: t.label, color: PALETTE[i % PALETTE.length], values: rows.map(function (r) { var c = cellAt(r, col); return c && c.targets ? c.targets[i].prob : NaN; }) });
      });
      targets.forEach(function (t, i) {
        if (t.ids.length < 2) return;
        series.push({ kind: "target-seq", index: i, label: t.label + " (whole string)", color: PALETTE[i % PALETTE.length], dashed: true, values: rows.map(function (r) { var c = cellAt(r, col); return c && c.targets && typeof c.targets[i].sequence_prob === "number" ? c.targets[i].sequence_prob : NaN; }) });
      });
      families.forEach(function (f, i) {
        series.push({ kind: "family", index: i, label: "family " + f.label, color: familyColor(i), dashed: true, values: rows.map(function (r) { var c = cellAt(r, col); return c && c.families ? c.families[i] : NaN; }) });
      });
      series.push({ kind: "top1", index: 0, label: "top-1 token", color: "#9aa3ae", thin: true, values: rows.map(function (r) { var c = cellAt(r, col); return c && c.top[0] ? c.top[0].prob : NaN; }) });
      var seqMarks = [];
      targets.forEach(function (t, i) {
        if (t.ids.length > 1 && t.sequence_probs && typeof t.sequence_probs[col] === "number") seqMarks.push({ index: i, value: t.sequence_probs[col], color: PALETTE[i % PALETTE.length] });
      });

      var W = 760, H = 280, L = 58, R = 18, T = 14, B = 40;
      var log = state.chartLog;
      var minPos = 1;
      series.forEach(function (se) { se.values.forEach(function (v) { if (v > 0 && v < minPos) minPos = v; }); });
      seqMarks.forEach(function (mk) { if (mk.value > 0 && mk.value < minPos) minPos = mk.value; });
      var lo = Math.max(-12, Math.min(-1, Math.floor(Math.log10(minPos))));
      function y(v) {
        if (!(v > 0)) v = log ? Math.pow(10, lo) : 0;
        var t = log ? (Math.log10(Math.max(v, Math.pow(10, lo))) - lo) / -lo : v;
        return T + (1 - t) * (H - T - B);
      }
      var n = rows.length;
      function x(i) { return L + (n <= 1 ? 0 : (i * (W - L - R)) / (n - 1)); }

      var svg = s("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", role: "img", "aria-label": "tracked probabilities across layers", class: "ll-svg" });
      // y grid and ticks
      var yt = [];
      if (log) {
        var stepDec = -lo > 8 ? 2 : 1;
        for (var d = 0; d >= lo; d -= stepDec) yt.push([Math.pow(10, d), d === 0 ? "1" : d >= -2 ? String(Math.pow(10, d)) : "1e" + d]);
        // Values below the axis are drawn on it: say so on the bottom label.
        if (minPos < Math.pow(10, lo) && yt.length && yt[yt.length - 1][0] === Math.pow(10, lo)) yt[yt.length - 1][1] = "≤" + yt[yt.length - 1][1];
      } else {
        [0, 0.25, 0.5, 0.75, 1].forEach(function (v) { yt.push([v, v * 100 + "%"]); });
      }
      yt.forEach(function (tk) {
        var yy = y(tk[0]);
        svg.append(s("line", { x1: L, x2: W - R, y1: yy, y2: yy, class: "ll-grid" }));
        svg.append(s("text", { x: L - 6, y: yy + 4, class: "ll-axis", "text-anchor": "end", text: tk[1] }));
      });
      // x ticks: one label per block (its first row), thinned to fit
      var labelled = [];
      rows.forEach(function (r, i) {
        if (r === "final") return labelled.push(i);
        var ly = layers[r];
        var prev = i > 0 ? layers[rows[i - 1]] : null;
        if (!prev || prev.layer !== ly.layer) labelled.push(i);
      });
      var every = Math.max(1, Math.ceil(labelled.length / 16));
      labelled.forEach(function (i, k) {
        var r = rows[i];
        if (r !== "final" && k % every !== 0) return;
        var label = r === "final" ? "out" : layers[r].point === "embed" ? "emb" : String(layers[r].layer);
        svg.append(s("line", { x1: x(i), x2: x(i), y1: H - B, y2: H - B + 4, class: "ll-tick" }));
        svg.append(s("text", { x: x(i), y: H - B + 16, class: "ll-axis" + (r === "final" ? " out" : ""), "text-anchor": "middle", text: label }));
      });
      svg.append(s("text", { x: (L + W - R) / 2, y: H - 4, class: "ll-axis-title", "text-anchor": "middle", text: "layer (readouts in forward order" + (state.point === "all" && points.length > 1 ? ", all points" : "") + "), then the output" }));
      svg.append(s("line", { x1: L, x2: L, y1: T, y2: H - B, class: "ll-axis-line" }));
      svg.append(s("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "ll-axis-line" }));
      var marker = s("line", { x1: 0, x2: 0, y1: T, y2: H - B, class: "ll-marker", visibility: "hidden" });
      svg.append(marker);
      // lines (top-1 drawn first, underneath)
      series.slice().reverse().forEach(function (se) {
        var d = "";
        var pen = false;
        se.values.forEach(function (v, i) {
          if (typeof v !== "number" || !isFinite(v)) { pen = false; return; }
          d += (pen ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1) + " ";
          pen = true;
        });
        svg.append(s("path", {
          d: d.trim(),
          class: "ll-series series-" + se.kind,
          "data-index": se.index,
          "data-label": se.label,
          fill: "none",
          stroke: se.color,
          "stroke-width": se.thin ? 1.5 : 2.2,
          "stroke-dasharray": se.dashed ? "6 4" : null,
        }));
        if (se.kind === "target") se.values.forEach(function (v, i) { if (v > 0) svg.append(s("circle", { cx: x(i), cy: y(v), r: 2.4, fill: se.color, class: "ll-dot" })); });
      });
      seqMarks.forEach(function (mk) {
        var cx = x(n - 1) , cy = y(mk.value), r = 5;
        svg.append(s("polygon", { points: [cx, cy - r, cx + r, cy, cx, cy + r, cx - r, cy].join(" "), fill: "#fff", stroke: mk.color, "stroke-width": 2, class: "series-seq", "data-index": mk.index }));
      });
      // hover overlay: nearest readout
      var overlay = s("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "transparent", class: "ll-overlay" });
      svg.append(overlay);
      function showAt(i) {
        marker.setAttribute("x1", String(x(i)));
        marker.setAttribute("x2", String(x(i)));
        marker.setAttribute("visibility", "visible");
        var r = rows[i];
        chartReadout.textContent = "";
        append(chartReadout, [h("b", { text: r === "final" ? "output" : rowTitle(layers[r]) }), ": "]);
        series.forEach(function (se, k) {
          append(chartReadout, [k ? " · " : "", h("span", { class: "ll-swatch" + (se.dashed ? " dashed" : ""), style: se.dashed ? "border-color:" + se.color : "background:" + se.color }), se.label + " " + formatProb(se.values[i])]);
        });
      }
      overlay.addEventListener("mousemove", /** @param {MouseEvent} ev */ function (ev) {
        var rect = svg.getBoundingClientRect();
        var px = ((ev.clientX - rect.left) / rect.width) * W;
        var i = Math.round(((px - L) / (W - L - R)) * (n - 1));
        showAt(Math.max(0, Math.min(n - 1, i)));
      });
      overlay.addEventListener("mouseleave", function () { marker.setAttribute("visibility", "hidden"); chartReadout.textContent = ""; hintReadout(); });
      overlay.addEventListener("click", /** @param {MouseEvent} ev */ function (ev) {
        var rect = svg.getBoundingClientRect();
        var px = ((ev.clientX - rect.left) / rect.width) * W;
        var i = Math.max(0, Math.min(n - 1, Math.round(((px - L) / (W - L - R)) * (n - 1))));
        pin(rows[i], col, true);
      });
      function hintReadout() {
        chartReadout.textContent = targets.length || families.length ? "hover the chart to read values; click to open that readout" : "track targets with --track <text> and families with --track-family <spec> to follow them here";
      }
      hintReadout();
      chartSvgBox.append(svg);
      // pinned readout marker
      var pr = rows.indexOf(state.pinned.row);
      if (pr >= 0 && state.pinned.col === col) {
        svg.insertBefore(s("line", { x1: x(pr), x2: x(pr), y1: T, y2: H - B, class: "ll-pinned-marker" }), marker);
      }
      // legend
      series.forEach(function (se) {
        var extra = null;
        if (se.kind === "target") {
          var t = targets[se.index];
          extra = t.tokens.length > 1 ? " (line: first token " + t.tokens[0].text + " of " + t.tokens.length + "; ◇ at out: whole sequence)" : "";
        } else if (se.kind === "family") extra = " (" + families[se.index].description + ")";
        chartLegend.append(
          h("span", { class: "ll-legend-entry legend-" + se.kind }, [
            h("span", { class: "ll-swatch" + (se.dashed ? " dashed" : "") + (se.thin ? " thin" : ""), style: se.dashed ? "border-color:" + se.color : "background:" + se.color }),
            h("span", { class: "ll-tokbox", text: se.label }),
            extra ? h("span", { class: "ll-small", text: extra }) : null,
          ]),
        );
      });
    }

    // ---------------------------------------------------------- interaction
    function markPinned() {
      table.querySelectorAll("td.cell.pinned").forEach(function (el) { el.classList.remove("pinned"); });
      var el = cellEls.get(state.pinned.row + ":" + state.pinned.col);
      if (el) el.classList.add("pinned");
      headEls.forEach(function (th, i) { th.classList.toggle("selected", i === state.position); });
    }

    function pin(row, col, fromChart) {
      state.pinned = { row: row, col: col };
      state.position = col;
      markPinned();
      renderDetails(row, col, "pinned");
      renderChart();
      // Keyboard navigation listens on the scroller: keep the focus there after a click.
      if (!fromChart) scroller.focus({ preventScroll: true });
      var el = cellEls.get(row + ":" + col);
      if (el && fromChart) el.scrollIntoView({ block: "nearest", inline: "nearest" });
    }

    function selectPosition(col) {
      if (col < 0 || col >= nCols) return;
      state.position = col;
      if (state.pinned.col !== col) state.pinned = { row: state.pinned.row, col: col };
      markPinned();
      renderDetails(state.pinned.row, col, "pinned");
      renderChart();
    }

    var hoverCol = -1;
    var hoverRowLabel = null;
    function setHover(td) {
      if (hoverCol >= 0 && headEls[hoverCol]) headEls[hoverCol].classList.remove("hover");
      if (hoverRowLabel) hoverRowLabel.classList.remove("hover");
      hoverCol = -1;
      hoverRowLabel = null;
      if (!td) return;
      hoverCol = Number(td.getAttribute("data-col"));
      if (headEls[hoverCol]) headEls[hoverCol].classList.add("hover");
      hoverRowLabel = td.parentElement.firstElementChild;
      hoverRowLabel.classList.add("hover");
    }

    function rowOf(el) {
      var r = el.getAttribute("data-row");
      return r === "final" ? "final" : Number(r);
    }

    table.addEventListener("mouseover", function (ev) {
      var td = ev.target.closest("td.cell");
      if (!td) return;
      var key = td.getAttribute("data-row") + ":" + td.getAttribute("data-col");
      if (state.hover === key) return;
      state.hover = key;
      setHover(td);
      renderDetails(rowOf(td), Number(td.getAttribute("data-col")), "hover");
    });
    table.addEventListener("mouseleave", function () {
      state.hover = null;
      setHover(null);
      renderDetails(state.pinned.row, state.pinned.col, "pinned");
    });
    table.addEventListener("click", function (ev) {
      var td = ev.target.closest("td.cell");
      if (td) return pin(rowOf(td), Number(td.getAttribute("data-col")));
      var th = ev.target.closest("th.col-head");
      if (th) selectPosition(Number(th.getAttribute("data-col")));
    });
    scroller.addEventListener("keydown", function (ev) {
      var rows = displayRows();
      var ri = rows.indexOf(state.pinned.row);
      var ci = state.pinned.col;
      if (ev.key === "ArrowLeft") ci--;
      else if (ev.key === "ArrowRight") ci++;
      else if (ev.key === "ArrowUp") ri--;
      else if (ev.key === "ArrowDown") ri++;
      else return;
      ev.preventDefault();
      if (ri < 0 || ri >= rows.length || ci < 0 || ci >= nCols) return;
      pin(rows[ri], ci);
      var el = cellEls.get(rows[ri] + ":" + ci);
      if (el) el.scrollIntoView({ block: "nearest", inline: "nearest" });
    });

    function highlightColumns(a, b, on) {
      for (var p = a; p <= b; p++) {
        if (!colOfPosition.has(p)) continue;
        var col = colOfPosition.get(p);
        headEls[col].classList.toggle("span-hl", on);
      }
    }

    if (pointSelect) pointSelect.addEventListener("change", function () {
      state.point = pointSelect.value;
      if (state.pinned.row !== "final" && state.point !== "all" && layers[state.pinned.row].point !== state.point) state.pinned.row = "final";
      buildBody();
      renderDetails(state.pinned.row, state.pinned.col, "pinned");
      renderChart();
    });
    colorSelect.addEventListener("change", function () {
      state.colorBy = colorSelect.value;
      // Target and family probabilities are usually tiny: read them on a log scale.
      state.logColor = state.colorBy !== "top1";
      logColorBox.checked = state.logColor;
      colorCells();
    });
    logColorBox.addEventListener("change", function () { state.logColor = logColorBox.checked; colorCells(); });
    function updateOrderButton() { orderButton.textContent = state.outputOnTop ? "⇅ put output at the bottom" : "⇅ put output on top"; }
    orderButton.addEventListener("click", function () {
      state.outputOnTop = !state.outputOnTop;
      updateOrderButton();
      buildBody();
    });
    posSelect.addEventListener("change", function () { selectPosition(Number(posSelect.value)); });
    chartLogBox.addEventListener("change", function () { state.chartLog = chartLogBox.checked; renderChart(); });

    // ---------------------------------------------------------- assemble
    var heatCard = h("section", { class: "ll-card ll-heat-card" }, [
      h("div", { class: "ll-card-head" }, [
        h("h2", { text: "Top-1 prediction of every readout at every position" }),
        h("span", { class: "ll-hint", text: layers.length + " readouts × " + nCols + " positions · the column header is the input token; the cell is what that readout predicts comes next" }),
      ]),
      controls,
      scroller,
    ]);
    var main = h("div", { class: "ll-main" }, [heatCard, chart]);
    root.append(header, textCard, h("div", { class: "ll-body" }, [main, details]));
    updateOrderButton();
    buildBody();
    if (nCols > 0) {
      renderDetails(state.pinned.row, state.pinned.col, "pinned");
      renderChart();
      // Start scrolled to the end: the last position is where the prediction of interest is.
      scroller.scrollLeft = scroller.scrollWidth;
    }

    return {
      select: function (row, col) { pin(row, col); },
      selectPosition: selectPosition,
      state: state,
    };
  }

  function uniquePoints(layers) {
    var seen = {};
    layers.forEach(function (l) { seen[l.point] = true; });
    return POINT_ORDER.filter(function (p) { return seen[p]; }).concat(Object.keys(seen).filter(function (p) { return POINT_ORDER.indexOf(p) < 0; }));
  }

  var api = { renderLensReport: renderLensReport, formatProb: formatProb, colorAt: colorAt };
  global.LensView = api;
  global.renderLensReport = renderLensReport;
})(typeof globalThis !== "undefined" ? globalThis : window);
