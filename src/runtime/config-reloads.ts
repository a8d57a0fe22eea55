/**
 * Reloads from the config file (SIGHUP, `run --watch`, `sessionlb reload`; a cluster worker
 * from the text its primary validated), one at a time: read, validate, have the processes
 * that switch with this one prepare (ReloadPeers), switch, and count. An invalid file or a
 * switch that cannot be made changes nothing: every problem is logged and the failure counted.
 */
import { loadConfigText, readConfigText } from '../config/load.js';
import { ConfigError, type Config } from '../config/model.js';
import type { EventLog } from '../observability/log.js';
import type { ReloadPeers } from './role.js';

/** What a reload switches. */
export interface Reloadable {
  readonly config: Config;
  readonly stopping: boolean;
  /** Switches to `config`, or rejects having changed nothing (SessionLB.reload). */
  reload(config: Config): Promise<void>;
  /** What the log line of a reload that succeeded says is in use. */
  inUse(): { listen: string[]; upstreams: string[] };
}

export class ConfigReloads {
  /** Counts for metrics and /status. */
  readonly counts = { success: 0, failure: 0 };
  /** When the last reload succeeded / failed (ms since epoch), null = never. */
  lastSuccess: number | null = null;
  lastFailure: number | null = null;
  /** Why the last reload failed (a cluster worker reports it to the primary); null after a success. */
  lastError: string | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly target: Reloadable,
    private readonly log: EventLog,
    private readonly peers: ReloadPeers | null,
    /** The text of the config file in use (null: the config did not come from a file); a reload that succeeds replaces it. */
    public configText: string | null,
  ) {}

  /** Reloads from `file`, or from `givenText` as the text of `file`; resolves true when the new config is in use. */
  run(file: string, givenText: string | null): Promise<boolean> {
    const run = (): Promise<boolean> => this.once(file, givenText);
    const result = this.queue.then(run, run);
    this.queue = result;
    return result;
  }

  private async once(file: string, givenText: string | null): Promise<boolean> {
    const { target, log, peers } = this;
    if (target.stopping) return false;
    try {
      const text = givenText ?? await readConfigText(file);
      const config = await loadConfigText(text, file);
      const admin = target.config.admin;
      if (admin !== null && config.admin !== null && config.admin.listen.key !== admin.listen.key) {
        log.warn({ file, admin: admin.listen.key }, 'admin.listen changes take effect only after a restart');
      }
      if (peers !== null) await peers.prepare(config, text);
      try {
        await target.reload(config);
      } catch (err) {
        await peers?.abort();
        throw err;
      }
      this.configText = text;
      await peers?.committed();
    } catch (err) {
      this.counts.failure++;
      this.lastFailure = Date.now();
      this.lastError = err instanceof ConfigError
        ? err.problems.map((p) => `${p.path}: ${p.message}`).join('; ')
        : (err as Error).message;
      if (err instanceof ConfigError) {
        for (const p of err.problems) log.error({ file, path: p.path, problem: p.message }, `${file}: ${p.path}: ${p.message}`);
      } else {
        log.error({ file, err: (err as Error).message }, `reload of ${file} failed: ${(err as Error).message}`);
      }
      log.error({ file, failures: this.counts.failure }, 'reload failed; still serving the previous configuration');
      return false;
    }
    this.counts.success++;
    this.lastSuccess = Date.now();
    this.lastError = null;
    log.info({ file, ...target.inUse() }, 'configuration reloaded');
    return true;
  }
}
