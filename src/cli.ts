#!/usr/bin/env node
/**
 * sessionlb command line: run | check | demo (and --help, --version).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { ConfigError, loadConfig, loadConfigFile, type Config } from './config/load.js';
import { SessionLB } from './server.js';
import { createEventLog, type EventLog } from './observability/log.js';
import { DEMO_BACKEND_PORTS, DEMO_WEIGHTS, demoConfig, startDemoBackend } from './demo.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DEFAULT_CONFIG = 'config/default.json';

const HELP = `sessionlb - session-aware HTTP load balancer (nginx-compatible upstreams)

Usage:
  sessionlb run   [--config FILE] [--pretty]   serve until SIGTERM/SIGINT (default FILE: ${DEFAULT_CONFIG})
  sessionlb check [--config FILE]              validate FILE like "nginx -t"
  sessionlb demo  [--port N]                   4 loopback backends (weights 3:1:1:1) behind sessionlb
  sessionlb --help | --version

Options:
  -c, --config FILE   configuration file (JSON)
  --pretty            human-readable logs instead of JSON lines
  --port N            demo: port to listen on (default 8080)
`;

interface Args {
  command: string;
  config: string;
  pretty: boolean;
  port: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { command: '', config: DEFAULT_CONFIG, pretty: false, port: 8080 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) fail(`${a} needs a value`);
      return v;
    };
    if (a === '--help' || a === '-h') args.command = 'help';
    else if (a === '--version' || a === '-v') args.command = 'version';
    else if (a === '--config' || a === '-c') args.config = value();
    else if (a.startsWith('--config=')) args.config = a.slice(9);
    else if (a === '--pretty') args.pretty = true;
    else if (a === '--port') args.port = Number(value());
    else if (a.startsWith('-')) fail(`unknown option ${a}`);
    else if (args.command === '') args.command = a;
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

async function check(file: string): Promise<number> {
  try {
    await loadConfigFile(file);
    process.stdout.write(`sessionlb: the configuration file ${file} syntax is ok\nconfiguration OK\n`);
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.stderr.write(`sessionlb: configuration file ${file} test failed (${err.problems.length} problem${err.problems.length === 1 ? '' : 's'})\n`);
      return 1;
    }
    throw err;
  }
}

/** Runs a balancer until SIGTERM/SIGINT, then drains and exits 0. */
async function serve(config: Config, log: EventLog, onStop?: () => Promise<void>): Promise<void> {
  const lb = new SessionLB(config, { log });
  await lb.start();
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, timeoutMs: config.shutdownTimeoutMs }, 'shutting down: finishing requests in flight');
    void lb.stop().then(async () => {
      await onStop?.();
      log.flush?.();
      setTimeout(() => process.exit(0), 50).unref();
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function run(args: Args): Promise<void> {
  const log = createEventLog({ pretty: args.pretty });
  let config: Config;
  try {
    config = await loadConfigFile(args.config);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  await serve(config, log);
}

async function demo(args: Args): Promise<void> {
  const log = createEventLog({ pretty: true });
  const backends = await Promise.all(DEMO_BACKEND_PORTS.map((port, i) => startDemoBackend(`backend-${i + 1}`, port)));
  const config = await loadConfig(demoConfig(args.port), '<embedded demo config>');
  await serve(config, log, async () => {
    for (const b of backends) b.close();
  });
  const url = `http://127.0.0.1:${args.port}/`;
  process.stdout.write(`
sessionlb demo: 4 backends on 127.0.0.1:${DEMO_BACKEND_PORTS.join(', ')} with weights ${DEMO_WEIGHTS.join(':')}
  balancer: ${url}
  admin:    http://127.0.0.1:9100/healthz

Try:
  for i in $(seq 6); do curl -s ${url}; done          # rotates 3:1:1:1 (a a b a c d ...)
  curl -s -c /tmp/jar -b /tmp/jar ${url}               # with a cookie jar (PHPSESSID)

Ctrl-C stops it.
`);
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
      process.exitCode = await check(args.config);
      return;
    case 'run':
      await run(args);
      return;
    case 'demo':
      await demo(args);
      return;
    default:
      fail(`unknown command "${args.command}"`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`sessionlb: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
