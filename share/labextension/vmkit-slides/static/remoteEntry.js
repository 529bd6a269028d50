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

  var plugin = {
    id: NAME + ":fit",
    description: "Shrink a live slide (RISE) that does not fit the window, as the decks do.",
    autoStart: true,
    activate: function () {
      document.addEventListener("ready", onSlide);
      document.addEventListener("slidechanged", onSlide);
      window.vmkitSlidesFit = function () { fit(shownSlide()); }; // for the console and tests
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
