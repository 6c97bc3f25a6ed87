// MathJax settings: pymdownx.arithmatex (generic mode) writes \( \) and \[ \]; the tutorial's
// notebook cells (mkdocs-jupyter) keep the $$ … $$ of their Markdown. No single-$ inline math:
// prices and shell snippets stay text.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
};

document$.subscribe(() => {
  MathJax.typesetPromise();
});
