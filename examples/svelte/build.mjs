// Bundles src/main.js and its Svelte components into dist/app.js. esbuild's command line takes
// no plugins, hence this script; the Svelte compiler runs through esbuild-svelte.
import { build } from 'esbuild'
import svelte from 'esbuild-svelte'

await build({
  entryPoints: ['src/main.js'],
  bundle: true,
  format: 'esm',
  minify: true,
  outfile: 'dist/app.js',
  // Svelte's package resolves to its browser runtime under these conditions.
  conditions: ['svelte', 'browser'],
  mainFields: ['svelte', 'browser', 'module', 'main'],
  plugins: [svelte({ compilerOptions: { css: 'injected' } })],
  logLevel: 'info',
})
