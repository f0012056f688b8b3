/**
 * `morsel web --region R [--port 8080] [--listen 127.0.0.1] [--report DIR]`:
 * serves a live view of the region in a browser (src/web/server.ts). Prints
 * the URL (and the access token off loopback), with --json as one object,
 * then serves until SIGINT or SIGTERM, which close it cleanly (exit 0).
 */
import type { Command } from 'commander';
import { jsonOption, parsePort, printError, printResult, regionOption } from './common.js';


export function registerWeb(program: Command): void {
  program
    .command('web')
    .description('serve a live, read-only view of the region in a browser: names, page-table trees, frame map')
    .addOption(regionOption())
    .option('--port <port>', 'TCP port (0: any free port)', '8080')
    .option('--listen <address>', 'address to listen on; anything but loopback requires the printed access token', '127.0.0.1')
    .option('--report <dir>', 'where `npm run bench` wrote its report (linked from the page when present)', 'report')
    .addOption(jsonOption())
    .action(async (o: { region: string; port: string; listen: string; report: string; json?: boolean }) => {
      try {
        const { startWeb } = await import('../web/server.js');
        const web = await startWeb({ regionPath: o.region, port: parsePort(o.port), listen: o.listen, reportDir: o.report });
        const stop = (): void => {
          void web.close().then(() => process.exit(0));
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        printResult(!!o.json, { url: web.url, token: web.token, port: web.port, region: o.region }, () =>
          `morsel web: serving ${o.region} read-only at ${web.url}${web.token === null ? '' : `\naccess token: ${web.token} (required on every request)`}\nCtrl-C stops it`);
      } catch (e) {
        printError(!!o.json, e);
      }
    });
}
