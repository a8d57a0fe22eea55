#!/usr/bin/env node
/**
 * sessionlb command line: run | check | reload | import-nginx | firewall | demo (and --help, --version).
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { loadConfigFile, loadConfigText, readConfigText } from './config/load.js';
import { type Config } from './config/model.js';
import { createEventLog } from './observability/log.js';
import { demoCommand } from './tools/demo.js';
import { bindErrorText } from './net/listen.js';
import { checkCommand, firewallCommand, importNginxCommand, loadOrReport } from './tools/offline-commands.js';
import cluster from 'node:cluster';
import { ClusterPrimary } from './runtime/primary.js';
import { runWorker } from './runtime/worker.js';
import { serve } from './runtime/single.js';
import { tuneHeapGrowth, tunePretenuring } from './process/heap-tuning.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DEFAULT_CONFIG = 'config/default.json';

const HELP = `sessionlb - session-aware HTTP load balancer (nginx-compatible upstreams)

Usage:
  sessionlb run   --config FILE [--pretty] [--watch]
                                               serve until SIGTERM/SIGINT;
                                               SIGHUP reloads FILE, --watch reloads it when it changes
  sessionlb check [--config FILE]              validate FILE like "nginx -t"
  sessionlb reload [--config FILE]             validate FILE, then send SIGHUP to the pid in its pidFile
                                               (like "nginx -s reload")
  sessionlb import-nginx FILE [--out OUT] [--allow-open]
                                               convert an nginx config (upstream/server/location) to
                                               sessionlb JSON on stdout or OUT; warnings name FILE:LINE
  sessionlb firewall [--config FILE] [--port N] [--balancer ADDR]... [--format F] [--family 4|6]
                                               print firewall rules that let only localhost, the
                                               balancers and the web servers reach memcached
  sessionlb demo  [--port N]                   4 loopback backends (weights 3:1:1:1) behind sessionlb
                                               (ports 8080, 9001-9004, status 9100; --port N: N..N+5)
  sessionlb --help | --version

Options:
  -c, --config FILE   configuration file (JSON)
  --pretty            human-readable logs instead of JSON lines
  --watch             run: reload the config file when it changes (debounced)
  --port N            demo: port to listen on (default 8080);
                      firewall: memcached port when the config has no sessionStore.servers (default 11211)
  -o, --out FILE      import-nginx: write the JSON to FILE instead of stdout
  --allow-open        import-nginx: convert even when an access restriction (auth_request, satisfy any,
                      internal, ...) cannot be carried over (a warning instead of an error: opened!)
  --balancer ADDR     firewall: another sessionlb host (IP or CIDR) allowed to reach memcached; repeatable
  --format F          firewall: iptables-restore (default; one file per --family), nftables or script
  --family 4|6        firewall: iptables-restore: IPv4 file (default) or IPv6 file (for ip6tables-restore)
`;

interface Args {
  command: string;
  config: string;
  pretty: boolean;
  watch: boolean;
  port: number;
  /** --config given (`run` needs one: the default file is the demo's layout without its backends). */
  configSet: boolean;
  /** --port given explicitly (firewall's default differs from demo's). */
  portSet: boolean;
  /** import-nginx FILE */
  file: string | null;
  out: string | null;
  /** import-nginx --allow-open */
  allowOpen: boolean;
  balancers: string[];
  /** firewall --format / --family, as given (checked by firewallCommand). */
  format: string | null;
  family: string | null;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { command: '', config: DEFAULT_CONFIG, configSet: false, pretty: false, watch: false, port: 8080, portSet: false, file: null, out: null, allowOpen: false, balancers: [], format: null, family: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) fail(`${a} needs a value`);
      return v;
    };
    if (a === '--help' || a === '-h') args.command = 'help';
    else if (a === '--version' || a === '-v') args.command = 'version';
    else if (a === '--config' || a === '-c') { args.config = value(); args.configSet = true; }
    else if (a.startsWith('--config=')) { args.config = a.slice(9); args.configSet = true; }
    else if (a === '--pretty') args.pretty = true;
    else if (a === '--watch') args.watch = true;
    else if (a === '--port') { args.port = Number(value()); args.portSet = true; }
    else if (a === '--out' || a === '-o') args.out = value();
    else if (a === '--allow-open') args.allowOpen = true;
    else if (a === '--balancer') args.balancers.push(value());
    else if (a === '--format') args.format = value();
    else if (a.startsWith('--format=')) args.format = a.slice(9);
    else if (a === '--family') args.family = value();
    else if (a.startsWith('--family=')) args.family = a.slice(9);
    else if (a.startsWith('-')) fail(`unknown option ${a}`);
    else if (args.command === '') args.command = a;
    else if (args.command === 'import-nginx' && args.file === null) args.file = a;
    else fail(`unexpected argument ${a}`);
  }
  return args;
}

function fail(message: string): never {
  process.stderr.write(`sessionlb: ${message}\n\n${HELP}`);
  process.exit(2);
}

function version(): string {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** `sessionlb reload`: validates the file like `check`, then signals the running process through its pidFile. */
async function reloadCommand(file: string): Promise<number> {
  const config = await loadOrReport(() => loadConfigFile(file),
    () => `sessionlb: configuration file ${file} test failed; the running process was not signalled`);
  if (config === null) return 1;
  if (config.pidFile === null) {
    process.stderr.write(`sessionlb: ${file} has no "pidFile"; set one (and restart) to use "sessionlb reload", or send SIGHUP yourself\n`);
    return 1;
  }
  let pid: number;
  try {
    pid = Number((await readFile(config.pidFile, 'utf8')).trim());
  } catch (err) {
    process.stderr.write(`sessionlb: cannot read pid file ${config.pidFile}: ${(err as Error).message} (is sessionlb running?)\n`);
    return 1;
  }
  if (!Number.isInteger(pid) || pid <= 1) {
    process.stderr.write(`sessionlb: pid file ${config.pidFile} does not hold a process id\n`);
    return 1;
  }
  try {
    process.kill(pid, 'SIGHUP');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    process.stderr.write(`sessionlb: cannot signal pid ${pid} from ${config.pidFile}: ${code === 'ESRCH' ? 'no such process (stale pid file?)' : (err as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`sessionlb: sent SIGHUP to pid ${pid} (from ${config.pidFile})\n`);
  return 0;
}

/**
 * With the memcached store, a bounded heap growth factor (src/process/heap-tuning.ts): every store
 * miss promotes a little garbage and V8 would let the heap reach 3-4x the live data. Not for
 * other configs: it costs large responses ~10-15% CPU (more full GCs; see
 * docs/decisions/bench-journal.md).
 */
function tuneHeapFor(config: Config): void {
  if (config.sessionStore.type === 'memcached') tuneHeapGrowth();
}

async function run(args: Args): Promise<void> {
  if (!args.configSet && !cluster.isWorker) {
    // config/default.json is the demo's layout: without the demo's backends every request would be a 502.
    process.stderr.write(`sessionlb: run needs your config: sessionlb run --config FILE (npm start -- --config FILE).
  To see sessionlb work first: npm run demo (4 backends and sessionlb on the built-in layout).
  Starting points: config/examples/ (sessionlb check --config FILE validates one; import-nginx converts an nginx config).
`);
    process.exit(2);
  }
  tunePretenuring(); // before any request is served (src/process/heap-tuning.ts)
  const log = createEventLog({ pretty: args.pretty });
  if (cluster.isWorker) {
    // Forked by the primary below (`workers` > 1): serve the shared listeners.
    await runWorker(args.config, log, { pretty: args.pretty, onConfig: tuneHeapFor });
    return;
  }
  const loaded = await loadOrReport(async () => {
    const text = await readConfigText(args.config);
    return { text, config: await loadConfigText(text, args.config) };
  });
  if (loaded === null) process.exit(1);
  const { text, config } = loaded;
  tuneHeapFor(config);
  if (config.workers > 1) {
    const primary = new ClusterPrimary(config, log, {
      file: args.config,
      configText: text,
      pretty: args.pretty,
      watch: args.watch,
    });
    await primary.start();
    return;
  }
  await serve(config, log, undefined, { reloadFile: args.config, watch: args.watch, pretty: args.pretty });
}

async function demo(args: Args): Promise<void> {
  const log = createEventLog({ pretty: true });
  await demoCommand(args.portSet ? args.port : null, fail, (config, stopBackends) =>
    serve(config, log, stopBackends, { reloadFile: null, watch: false, pretty: true }));
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  switch (args.command) {
    case 'help':
    case '':
      process.stdout.write(HELP);
      return;
    case 'version':
      process.stdout.write(`sessionlb ${version()}\n`);
      return;
    case 'check':
      process.exitCode = await checkCommand(args.config);
      return;
    case 'run':
      await run(args);
      return;
    case 'reload':
      process.exitCode = await reloadCommand(args.config);
      return;
    case 'demo':
      await demo(args);
      return;
    case 'import-nginx':
      if (args.file === null) fail('import-nginx needs an nginx configuration FILE');
      process.exitCode = await importNginxCommand(args.file, args.out, args.allowOpen);
      return;
    case 'firewall':
      process.exitCode = await firewallCommand(args.config, {
        port: args.portSet ? args.port : undefined, balancers: args.balancers, format: args.format, family: args.family,
      });
      return;
    default:
      fail(`unknown command "${args.command}"`);
  }
}

main().catch((err: unknown) => {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
  // A cluster worker's listen fails in the primary's bind(): same message.
  const what = e.syscall === 'listen' || e.syscall === 'bind' ? bindErrorText(e.code) : null;
  if (what !== null) {
    // Like nginx: "bind() to 127.0.0.1:80 failed (98: Address already in use)" — a clear line, not a stack.
    process.stderr.write(`sessionlb: cannot listen on ${e.address ?? '?'}:${e.port ?? '?'}: ${what}\n`);
    process.exit(1);
  }
  process.stderr.write(`sessionlb: ${e.stack ?? String(err)}\n`);
  process.exit(1);
});
