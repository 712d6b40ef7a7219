// Builds the served browser client, flask_impulse/static/client.js and client.d.ts, from the
// package's source, so a pip install serves it without Node. Run `npm run build` in js/ after a
// change to src/realtime.js or src/realtime.d.ts and commit the result (a test compares them).
//
//   node scripts/build.mjs [OUTDIR]    (default: ../flask_impulse/static)
import { readFile, writeFile, mkdir } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const source = join(here, '..', 'src')
const outdir = resolve(process.argv[2] ?? join(here, '..', '..', 'flask_impulse', 'static'))
const notice = '// Built from js/src/realtime.js by `npm run build` in js/: edit that file, not this one.\n'

const bundled = await build({
  entryPoints: [join(source, 'realtime.js')],
  bundle: true,
  format: 'esm',
  target: 'es2020',
  write: false,
  legalComments: 'none',
  charset: 'utf8',
})
const header = (await readFile(join(source, 'realtime.js'), 'utf8')).match(/^(\/\/.*\n)+/)[0]
await mkdir(outdir, { recursive: true })
await writeFile(join(outdir, 'client.js'), notice + header + bundled.outputFiles[0].text)
await writeFile(join(outdir, 'client.d.ts'), notice + (await readFile(join(source, 'realtime.d.ts'), 'utf8')))
