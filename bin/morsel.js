#!/usr/bin/env node
// The `morsel` command (src/cli/main.ts). Anything that escapes it is still
// one typed error (exit statuses: src/cli/common.ts): ENOTSUP (9) when the
// package was never built, EINTERNAL (10) for a bug.
import('../dist/src/cli/main.js').then((m) => m.main(process.argv)).catch((e) => {
  const built = !(e && e.code === 'ERR_MODULE_NOT_FOUND' && String(e.message).includes('dist/src/cli/main.js'));
  const code = built ? 'EINTERNAL' : 'ENOTSUP';
  const message = built
    ? `internal error in morsel (please report; MORSEL_DEBUG=1 shows the stack): ${e && e.message}`
    : 'morsel is not built: run `npm run build` (`npm ci` builds it too)';
  if (process.env.MORSEL_DEBUG) console.error(e);
  if (process.argv.includes('--json')) process.stdout.write(JSON.stringify({ error: { code, message } }) + '\n');
  else process.stderr.write(`morsel: ${code}: ${message}\n`);
  process.exit(built ? 10 : 9);
});
