// MathJax 3 for vmkit's course website (the same TeX set-up as the decks): $...$ and \(...\)
// inline, $$...$$ and \[...\] displayed; SVG output, so no web fonts are fetched.
window.MathJax = {
  tex: {
    inlineMath: [['$', '$'], ['\\(', '\\)']],
    displayMath: [['$$', '$$'], ['\\[', '\\]']],
    processEscapes: true,
    processEnvironments: true,
    tags: 'ams'
  },
  svg: { fontCache: 'global' },
  options: { enableMenu: false }
};
