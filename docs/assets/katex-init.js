// Renders the maths that pymdownx.arithmatex (generic mode) marks up, with the vendored KaTeX:
// no CDN, so the built site shows its equations offline. Re-runs on Material's instant navigation.
function equijaxRenderMath() {
  if (typeof renderMathInElement === "undefined") return;
  document.querySelectorAll(".arithmatex").forEach((el) => {
    renderMathInElement(el, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  });
}
if (typeof document$ !== "undefined") {
  document$.subscribe(equijaxRenderMath);
} else {
  document.addEventListener("DOMContentLoaded", equijaxRenderMath);
}
