/**
 * The two offline commands of the CLI: `import-nginx` (nginx config -> sessionlb JSON) and
 * `firewall` (iptables rules for the memcached hosts). Both only read files and print text.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { ConfigError, loadConfig, loadConfigFile } from './config/load.js';
import { formatConfigJson, formatDiagnostic, importNginx, NginxSyntaxError } from './config/nginx-import.js';
import { firewallPlan, firewallScript } from './firewall.js';

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

/** `sessionlb import-nginx FILE [--out OUT]`: exit 0 with the JSON (warnings on stderr), or 1. */
export async function importNginxCommand(file: string, out: string | null): Promise<number> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    process.stderr.write(`sessionlb: cannot read ${file}: ${(err as Error).message}\n`);
    return 1;
  }
  let result: ReturnType<typeof importNginx>;
  try {
    result = importNginx(text, file);
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
  // The result must be a configuration sessionlb accepts, exactly as `check` would see it.
  const label = out ?? `${file} (converted)`;
  const valid = await loadOrReport(() => loadConfig(JSON.parse(JSON.stringify(result.config)), label),
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

/** `sessionlb firewall [--config FILE] [--port N] [--balancer ADDR]...`: prints the script, or exits 1. */
export async function firewallCommand(configFile: string, port: number | undefined, balancers: string[]): Promise<number> {
  if (port !== undefined && !(Number.isInteger(port) && port >= 1 && port <= 65535)) {
    process.stderr.write('sessionlb: --port must be a port number 1-65535\n');
    return 2;
  }
  const config = await loadOrReport(() => loadConfigFile(configFile));
  if (config === null) return 1;
  let plan: ReturnType<typeof firewallPlan>;
  try {
    plan = firewallPlan(config, { port, balancers, source: configFile });
  } catch (err) {
    process.stderr.write(`sessionlb: ${(err as Error).message}\n`);
    return 2;
  }
  for (const w of plan.warnings) process.stderr.write(`sessionlb: warning: ${w}\n`);
  process.stdout.write(firewallScript(plan));
  return 0;
}
