// Builds the browser client into collab/static/app/ (committed, so the server runs without Node).
//   node build.mjs            one minified build: index.html, app.js, app.css
//   node build.mjs --watch    rebuild on change (development, inline source maps)
import * as esbuild from 'esbuild'
import { copyFileSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const outdir = join(here, '..', 'collab', 'static', 'app')
const watch = process.argv.includes('--watch')

// Only our own outputs live in outdir: start from a clean directory.
rmSync(outdir, { recursive: true, force: true })
mkdirSync(outdir, { recursive: true })
copyFileSync(join(here, 'src', 'index.html'), join(outdir, 'index.html'))

const options = {
  entryPoints: { app: join(here, 'src', 'main.js') }, // main.js imports app.css -> app.css
  outdir,
  bundle: true,
  format: 'iife',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  minify: !watch,
  sourcemap: watch ? 'inline' : false,
  legalComments: 'none',
  logLevel: 'info',
}

if (watch) {
  const ctx = await esbuild.context(options)
  await ctx.watch()
} else {
  await esbuild.build(options)
  for (const f of readdirSync(outdir).sort()) {
    console.log(`  ${f.padEnd(12)} ${(statSync(join(outdir, f)).size / 1024).toFixed(1)} KiB`)
  }
}
