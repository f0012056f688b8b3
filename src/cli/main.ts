/**
 * The `morsel` command line: parses with commander, then runs the chosen
 * command, which imports the heavy modules itself (start-up stays close to
 * bare `node`; bench/cli-start.ts measures it). Output contract, exit
 * statuses and how to add a command: see common.ts.
 */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { registerHwcheck } from '../hwcheck/cli.js';
import { followContract, printError } from './common.js';
import { registerIo } from './io.js';
import { registerKv } from './kv.js';
import { registerMorsels } from './morsels.js';
import { registerRegion } from './region.js';
import { registerNames } from './names.js';
import { registerWeb } from './web.js';
import { registerSerial } from './serial.js';

/** The package version, read from package.json (dist/src/cli -> package root). */
function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

const TARGETS_HELP = `
A <target> (read, write, inspect, destroy) is one of:
  /path            a name (create /path --size 4KiB): its mode is checked
  0x…@generation   a handle (printed by create <path>, stat, ls -l): ESTALE once destroyed
  0x…              a raw morsel ID (printed by create --order N): whatever lives there now
--region defaults to $MORSEL_REGION. Every command takes --json and --help.`;

export async function main(argv: string[]): Promise<void> {
  // `morsel read … | head` closes the pipe early: that ends the output, it is not an error.
  // Any other failure of stdout can only be told on stderr.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') printError(false, e);
    process.exit();
  });
  const program = new Command('morsel')
    .description('Morsels: memory objects built from x86-64 page-table subtrees')
    .version(packageVersion(), '-V, --version', 'print the version')
    .showHelpAfterError()
    .addHelpText('after', TARGETS_HELP);
  followContract(program, argv);
  registerRegion(program);
  registerMorsels(program);
  registerIo(program);
  registerHwcheck(program);
  registerNames(program);
  registerKv(program);
  registerWeb(program);
  registerSerial(program);
  await program.parseAsync(argv);
}
