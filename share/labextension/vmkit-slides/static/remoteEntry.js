// vmkit-slides: a JupyterLab extension for live slides (jupyterlab-rise), written by hand.
//
// The exported decks shrink a slide whose content is taller or wider than the slide box
// (share/slides/vmkit-reveal/index.html.j2: vmkitFit); RISE runs no script of the notebook's,
// so this extension does the same on RISE's page: on each slide shown (reveal.js's "ready"
// and "slidechanged" events, which bubble to the document) and whenever the shown slide's
// content grows (a cell run, a widget drawn), it sets the largest CSS zoom between MIN_ZOOM
// and 1 at which the slide fits the window, then lets reveal.js lay the slide out again.
// Anywhere else (JupyterLab itself) it does nothing: it acts only while <body> has RISE's
// class "rise-enabled".
//
// It also gives the lecturer a speaker view. RISE's own ("T": reveal.js's notes plugin) opens
// a window that loads the whole presentation twice more in frames and shows no notes. This
// one, on the same key in command mode (taken before RISE's binding sees it) or the command
// "vmkit-slides:speaker-notes", opens a small window of its own, written from
// this page: the notes of the slide shown (the notebook's "notes" cells, which RISE puts in
// reveal.js's <aside class="notes">, hidden on the slide), the title of the next slide, the
// slide's number and the time since the window opened (Reset sets it back to zero). It
// follows reveal.js's "slidechanged" and "fragmentshown" events; closing it changes nothing.
//
// No build step: JupyterLab loads a federated extension by running this script and asking the
// container it leaves in window._JUPYTERLAB[name] for "./extension" (init() receives the
// shared modules, which this extension does not need). vmkit.rise installs the folder into
// <prefix>/share/jupyter/labextensions/vmkit-slides.
(function () {
  "use strict";
  var NAME = "vmkit-slides";
  var MIN_ZOOM = 0.6; // as vmkit.nbtools.SLIDE_MIN_ZOOM: 15 px code stays at least 9 px

  function shownSlide() {
    var shown = document.querySelectorAll(".reveal .slides section.present");
    return shown.length ? shown[shown.length - 1] : null;
  }

  function box() {
    var slides = document.querySelector(".reveal .slides");
    return slides ? {width: slides.clientWidth, height: slides.clientHeight} : null;
  }

  function fits(slide, zoom, size) {
    slide.style.zoom = zoom === 1 ? "" : zoom.toFixed(3);
    // scrollWidth/Height are the slide's own (unzoomed) pixels, rounded: a pixel to spare
    return slide.scrollHeight * zoom <= size.height - 1
        && (slide.scrollWidth - 1) * zoom <= size.width;
  }

  // the largest zoom (MIN_ZOOM..1) at which the slide fits, set on it (MIN_ZOOM if none)
  function fit(slide) {
    var size = box();
    if (!slide || !size || size.height === 0) return;
    if (!fits(slide, 1, size)) {
      if (!fits(slide, MIN_ZOOM, size)) return;
      // text reflows at each size: search rather than divide
      var lo = MIN_ZOOM, hi = 1;
      while (hi - lo > 0.01) {
        var mid = (lo + hi) / 2;
        if (fits(slide, mid, size)) lo = mid; else hi = mid;
      }
      fits(slide, Math.floor(lo * 1000) / 1000, size);
    }
    // reveal.js centres the slide by its height: let it lay the slide out again
    window.dispatchEvent(new Event("resize"));
  }

  var observer = null, pending = false;

  function watch(slide) {
    if (observer) observer.disconnect();
    if (!slide || typeof MutationObserver === "undefined") return;
    // a cell's output appeared or grew: shrink further if the slide no longer fits (never
    // grow back while the lecturer works on the slide: the buttons would move)
    observer = new MutationObserver(function () {
      if (pending) return;
      pending = true;
      requestAnimationFrame(function () {
        pending = false;
        var size = box(), zoom = parseFloat(slide.style.zoom || "1");
        if (size && !fits(slide, zoom, size)) fit(slide);
      });
    });
    observer.observe(slide, {childList: true, subtree: true, characterData: true});
  }

  function onSlide() {
    if (!document.body.classList.contains("rise-enabled")) return;
    var slide = shownSlide();
    // the first fit waits a frame: reveal.js has just shown the slide
    requestAnimationFrame(function () { fit(slide); watch(slide); });
  }

  // --- the speaker view --------------------------------------------------------------------

  var COMMAND = NAME + ":speaker-notes";
  var speaker = null;   // the speaker window while it is open
  var started = 0;      // when its clock started (ms)
  var ticking = null;   // its clock's interval

  // the slides reveal.js shows one at a time (a slide, or each subslide of a slide), in order
  function slidesInOrder() {
    var all = document.querySelectorAll(".reveal .slides section");
    return Array.prototype.filter.call(all, function (s) { return !s.querySelector("section"); });
  }

  var lab = null;        // the JupyterLab application (RISE's page), from activate()
  var rendered = {};     // notes' Markdown source -> its HTML, rendered once

  // the notes cells RISE put into this slide's <aside class="notes">, as HTML. A notes cell is
  // usually collapsed (its input hidden), and JupyterLab then never renders it: it is
  // rendered here from the cell's source with the notebook's own Markdown renderer.
  function notesOf(slide) {
    var nodes = Array.prototype.slice.call(slide.querySelectorAll("aside.notes .jp-Cell"));
    var panel = lab && lab.shell && lab.shell.currentWidget;
    var cells = panel && panel.content && panel.content.widgets
        ? Array.prototype.slice.call(panel.content.widgets) : [];
    return Promise.all(nodes.map(function (node) {
      var cell = cells.filter(function (c) { return c.node === node; })[0];
      var source = cell ? cell.model.sharedModel.getSource() : node.textContent;
      if (!cell || cell.model.type !== "markdown" || !panel.content.rendermime) {
        var pre = document.createElement("pre");
        pre.textContent = source.trim();
        return Promise.resolve(pre.outerHTML);
      }
      if (rendered[source] !== undefined) return Promise.resolve(rendered[source]);
      var rendermime = panel.content.rendermime;
      var renderer = rendermime.createRenderer("text/markdown");
      var model = rendermime.createModel({data: {"text/markdown": source}, trusted: false});
      return renderer.renderModel(model).then(function () {
        rendered[source] = renderer.node.innerHTML;
        renderer.dispose();
        return rendered[source];
      });
    }));
  }

  // a slide's title: its first heading outside the notes, without JupyterLab's anchor link
  function titleOf(slide) {
    var headings = slide.querySelectorAll("h1, h2, h3, h4");
    for (var i = 0; i < headings.length; i++) {
      if (headings[i].closest("aside.notes")) continue;
      var h = headings[i].cloneNode(true);
      Array.prototype.forEach.call(h.querySelectorAll(".jp-InternalAnchorLink"),
                                   function (a) { a.remove(); });
      var text = h.textContent.trim();
      if (text) return text;
    }
    return "";
  }

  var SPEAKER_PAGE = [
    "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Speaker notes</title><style>",
    "body { font: 18px/1.45 system-ui, sans-serif; margin: 0; color: #222; background: #fff; }",
    "header { display: flex; gap: 1.5em; align-items: baseline; padding: .5em 1em;",
    "         background: #f0f0f0; border-bottom: 1px solid #ccc; }",
    "#vmkit-elapsed { font: bold 28px monospace; }",
    "main { padding: .5em 1em; }",
    "#vmkit-notes { font-size: 22px; }",
    "#vmkit-notes .vmkit-none { color: #777; font-style: italic; }",
    "#vmkit-next { color: #444; border-top: 1px solid #ccc; padding: .5em 1em; }",
    "pre { white-space: pre-wrap; }",
    "</style></head><body>",
    "<header><span id='vmkit-slide-number'></span><span id='vmkit-elapsed'>0:00</span>",
    "<button id='vmkit-reset' type='button'>Reset</button></header>",
    "<main><div id='vmkit-notes'></div></main>",
    "<footer id='vmkit-next'></footer>",
    "</body></html>"
  ].join("\n");

  function clock() {
    if (!speaker || speaker.closed) return;
    var s = Math.floor((Date.now() - started) / 1000);
    var hms = Math.floor(s / 3600) + ":" + ("0" + Math.floor(s / 60) % 60).slice(-2)
              + ":" + ("0" + s % 60).slice(-2);
    speaker.document.getElementById("vmkit-elapsed").textContent =
        s < 3600 ? hms.replace(/^0:0?/, "") : hms;
  }

  function esc(text) {
    var span = document.createElement("span");
    span.textContent = text;
    return span.innerHTML;
  }

  var updates = 0;  // the latest update wins (the notes are rendered asynchronously)

  // write what the slide shown now needs into the speaker window
  function updateSpeaker() {
    if (!speaker || speaker.closed) return Promise.resolve();
    var slides = slidesInOrder(), slide = shownSlide();
    var i = slides.indexOf(slide), update = ++updates;
    if (i < 0) return Promise.resolve();
    return notesOf(slide).then(function (notes) {
      if (update !== updates || !speaker || speaker.closed) return;
      var doc = speaker.document;
      doc.getElementById("vmkit-slide-number").textContent =
          "Slide " + (i + 1) + " of " + slides.length;
      doc.getElementById("vmkit-notes").innerHTML = notes.length ? notes.join("\n")
          : "<p class='vmkit-none'>No notes for this slide.</p>";
      var next = i + 1 < slides.length ? slides[i + 1] : null;
      doc.getElementById("vmkit-next").innerHTML = next
          ? "Next: <strong>" + esc(titleOf(next) || "(a slide without a title)") + "</strong>"
          : "Next: the end of the presentation.";
    }).catch(function (error) {
      console.warn(NAME + ": the speaker notes could not be shown", error);
    });
  }

  // open the speaker window (or bring it forward); null when the browser blocked the pop-up
  function openSpeaker() {
    if (speaker && !speaker.closed) {
      speaker.focus();
      updateSpeaker();
      return speaker;
    }
    speaker = window.open("", NAME + "-speaker", "width=900,height=600");
    if (!speaker) {
      console.warn(NAME + ": the speaker notes window was blocked; allow pop-ups for this page");
      return null;
    }
    speaker.document.open();
    speaker.document.write(SPEAKER_PAGE);
    speaker.document.close();
    started = Date.now();
    speaker.document.getElementById("vmkit-reset").addEventListener("click", function () {
      started = Date.now();
      clock();
    });
    if (ticking) clearInterval(ticking);
    ticking = setInterval(function () {
      if (!speaker || speaker.closed) { clearInterval(ticking); ticking = null; return; }
      clock();
    }, 1000);
    clock();
    updateSpeaker();
    return speaker;
  }

  var plugin = {
    id: NAME + ":fit",
    description: "Shrink a live slide (RISE) that does not fit the window, as the decks do; "
                 + "open a speaker notes window.",
    autoStart: true,
    activate: function (app) {
      lab = app;
      document.addEventListener("ready", onSlide);
      document.addEventListener("slidechanged", onSlide);
      document.addEventListener("slidechanged", updateSpeaker);
      document.addEventListener("fragmentshown", updateSpeaker);
      window.addEventListener("beforeunload", function () {
        if (speaker && !speaker.closed) speaker.close();
      });
      window.vmkitSlidesFit = function () { fit(shownSlide()); }; // for the console and tests
      if (app && app.commands) {
        app.commands.addCommand(COMMAND, {
          label: "Open the speaker notes",
          caption: "The notes of the slide shown, the next slide's title and the time",
          isEnabled: function () { return document.body.classList.contains("rise-enabled"); },
          execute: function () { openSpeaker(); }
        });
      }
      // RISE binds T (command mode) to reveal.js's notes window, and JupyterLab would run
      // both commands for one key: this listener comes first (the window, capture phase) and
      // keeps the key from RISE's binding
      window.addEventListener("keydown", function (event) {
        if (event.key !== "t" && event.key !== "T") return;
        if (event.ctrlKey || event.altKey || event.metaKey || event.shiftKey) return;
        if (!document.body.classList.contains("rise-enabled")) return;
        var target = event.target;
        if (!(target instanceof Element) || !target.closest(".reveal .jp-mod-commandMode")) return;
        if (target.closest("input, textarea, select, [contenteditable='true'], .cm-editor")) return;
        event.preventDefault();
        event.stopImmediatePropagation();
        openSpeaker();
      }, true);
    }
  };

  var scope = (window._JUPYTERLAB = window._JUPYTERLAB || {});
  scope[NAME] = {
    init: function () {},
    get: function (module) {
      if (module !== "./extension") {
        return Promise.reject(new Error(NAME + " has no module " + module));
      }
      return Promise.resolve(function () { return {__esModule: true, default: [plugin]}; });
    }
  };
})();
