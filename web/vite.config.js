// Builds the pages into the Python package (committed, so `pip install .` needs no node).
// base "./": every asset URL in index.html is relative, so the pages work below a prefix.
import { defineConfig } from "vite";

export default defineConfig({
  base: "./",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "../atelier/ui/static",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0, // no data: URLs for assets: plain files under a strict CSP
    chunkSizeWarningLimit: 400,
  },
});
