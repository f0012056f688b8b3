#!/usr/bin/env node
import('../dist/src/cli/main.js').then((m) => m.main(process.argv)).catch((e) => {
  if (e && e.code === 'ERR_MODULE_NOT_FOUND') console.error('morsel: not built yet: run `npm run build`');
  else console.error(e);
  process.exit(1);
});
