/**
 * The offline commands of the CLI: `check` (validates a configuration file), `import-nginx`
 * (nginx config -> sessionlb JSON) and `firewall` (iptables/nftables rules for the memcached
 * hosts). They only read files and print text.
 */
import { TicketKeys } from '../tls/ticket-keys.js';
import { buildTlsSites, tlsBuildProblems } from '../tls/contexts.js';
import { readTrustedCertificates } from '../tls/upstream-trust.js';
import { readFile, writeFile } from 'node:fs/promises';
import { loadConfig, loadConfigFile } from '../config/load.js';
import { ConfigError } from '../config/model.js';
import { userFileWarnings } from '../config/access.js';
import { formatConfigJson, formatDiagnostic, importNginx, NginxSyntaxError } from './import-nginx/import-nginx.js';
import { DEFAULT_FIREWALL_FORMAT, FIREWALL_FORMATS, firewallOutput, firewallPlan, isFirewallFormat } from './firewall.js';

/**
 * Runs `load`. An invalid configuration (ConfigError) is printed to stderr, problem by problem,
 * followed by `failed(err)` when given, and gives null; any other error propagates.
 */
export async function loadOrReport<T>(load: () => Promise<T>, failed?: (err: ConfigError) => string): Promise<T | null> {
  try {
    return await load();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${err.message}\n`);
    if (failed !== undefined) process.stderr.write(`${failed(err)}\n`);
    return null;
  }
}

/** `sessionlb check [--config FILE]`, like `nginx -t`: exit 0 when FILE is a valid configuration, or 1. */
export async function checkCommand(file: string): Promise<number> {
  const config = await loadOrReport(() => loadConfigFile(file),
    (err) => `sessionlb: configuration file ${file} test failed (${err.problems.length} problem${err.problems.length === 1 ? '' : 's'})`);
  if (config === null) return 1;
  // Like nginx -t: the certificate files too (readable, key matches, chain order; expiry and names warned),
  // and the trusted certificates of verified https upstreams.
  const built = await buildTlsSites(config.servers, new TicketKeys());
  const trusted = readTrustedCertificates(config);
  for (const w of built.warnings) process.stderr.write(`sessionlb: warning: ${w.file}: ${w.message} (server ${w.server} on ${w.address})\n`);
  for (const w of userFileWarnings(config)) process.stderr.write(`sessionlb: warning: ${w}\n`);
  const problems = [
    ...tlsBuildProblems(built),
    ...trusted.problems.map((p) => `${p.file}: ${p.message}`),
  ];
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`${p}\n`);
    process.stderr.write(`sessionlb: configuration file ${file} test failed (${problems.length} problem${problems.length === 1 ? '' : 's'})\n`);
    return 1;
  }
  process.stdout.write(`sessionlb: the configuration file ${file} syntax is ok\nconfiguration OK\n`);
  return 0;
}

/**
 * `sessionlb import-nginx FILE [--out OUT] [--allow-open]`: exit 0 with the JSON (warnings on
 * stderr), or 1. `allowOpen`: access restrictions that cannot be converted are warnings, not errors.
 */
export async function importNginxCommand(file: string, out: string | null, allowOpen = false): Promise<number> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    process.stderr.write(`sessionlb: cannot read ${file}: ${(err as Error).message}\n`);
    return 1;
  }
  let result: ReturnType<typeof importNginx>;
  try {
    result = importNginx(text, file, { allowOpen });
  } catch (err) {
    if (err instanceof NginxSyntaxError) {
      process.stderr.write(`${err.file}:${err.line}: error: ${err.detail}\nsessionlb: ${file} is not valid nginx syntax; nothing converted\n`);
      return 1;
    }
    throw err;
  }
  const lines = [
    ...result.errors.map((d) => formatDiagnostic(file, 'error', d)),
    ...result.warnings.map((d) => formatDiagnostic(file, 'warning', d)),
    ...result.notes.map((d) => formatDiagnostic(file, 'note', d)),
  ];
  if (lines.length > 0) process.stderr.write(`${lines.join('\n')}\n`);
  if (result.errors.length > 0) {
    process.stderr.write(`sessionlb: ${file}: ${result.errors.length} error${result.errors.length === 1 ? '' : 's'}; nothing written\n`);
    return 1;
  }
  // The result must be a configuration sessionlb accepts, exactly as `check` would see it; the
  // error page files that are not on this machine (warned about above) may be on the target
  // machine only: the copy checked here goes without their rules.
  const label = out ?? `${file} (converted)`;
  const checked = withoutPages(JSON.parse(JSON.stringify(result.config)) as unknown, new Set(result.missingFiles));
  const valid = await loadOrReport(() => loadConfig(checked, label),
    () => `sessionlb: the configuration converted from ${file} is not valid (above); nothing written`);
  if (valid === null) return 1;
  const json = formatConfigJson(result.config);
  if (out === null) {
    process.stdout.write(json);
  } else {
    await writeFile(out, json);
    const w = result.warnings.length;
    process.stderr.write(`sessionlb: wrote ${out} (${w} warning${w === 1 ? '' : 's'}); check it with "sessionlb check --config ${out}"\n`);
  }
  return 0;
}

/** `config` (a JSON copy) without the errorPage rules whose file is in `files`, at every level. */
function withoutPages(config: unknown, files: ReadonlySet<string>): unknown {
  if (files.size === 0) return config;
  const strip = (level: unknown): void => {
    if (level === null || typeof level !== 'object') return;
    const o = level as { errorPage?: unknown; servers?: unknown; locations?: unknown };
    if (Array.isArray(o.errorPage)) o.errorPage = o.errorPage.filter((r: { file?: unknown }) => !(typeof r.file === 'string' && files.has(r.file)));
    for (const child of [o.servers, o.locations]) if (Array.isArray(child)) child.forEach(strip);
  };
  strip(config);
  return config;
}

export interface FirewallCommandOptions {
  port: number | undefined;
  balancers: string[];
  /** --format and --family as given, or null. */
  format: string | null;
  family: string | null;
}

/**
 * `sessionlb firewall [--config FILE] [--port N] [--balancer ADDR]... [--format F] [--family 4|6]`:
 * prints the rules (exit 0), or exits 1 (bad config) or 2 (bad option).
 */
export async function firewallCommand(configFile: string, options: FirewallCommandOptions): Promise<number> {
  const { port, balancers } = options;
  const usage = (message: string): number => {
    process.stderr.write(`sessionlb: ${message}\n`);
    return 2;
  };
  if (port !== undefined && !(Number.isInteger(port) && port >= 1 && port <= 65535)) return usage('--port must be a port number 1-65535');
  const format = options.format ?? DEFAULT_FIREWALL_FORMAT;
  if (!isFirewallFormat(format)) return usage(`unknown --format ${JSON.stringify(format)} (expected ${FIREWALL_FORMATS.join(', ')})`);
  if (options.family !== null && format !== 'iptables-restore') {
    return usage(`--family applies to --format iptables-restore only (--format ${format} covers IPv4 and IPv6)`);
  }
  if (options.family !== null && options.family !== '4' && options.family !== '6') {
    return usage(`--family must be 4 or 6, not ${JSON.stringify(options.family)}`);
  }
  const family = options.family === '6' ? 6 : 4;
  const config = await loadOrReport(() => loadConfigFile(configFile));
  if (config === null) return 1;
  let plan: ReturnType<typeof firewallPlan>;
  try {
    plan = firewallPlan(config, { port, balancers, source: configFile });
  } catch (err) {
    return usage((err as Error).message);
  }
  for (const w of plan.warnings) process.stderr.write(`sessionlb: warning: ${w}\n`);
  if (format === 'iptables-restore' && options.family === null) {
    process.stderr.write('sessionlb: note: this is the IPv4 file; load it with iptables-restore --noflush, add the INPUT jump '
      + 'the comments give, and run again with --family 6 for ip6tables-restore (see docs/firewall.md)\n');
  }
  process.stdout.write(firewallOutput(plan, format, family));
  return 0;
}
