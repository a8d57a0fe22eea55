/**
 * A single process (`workers` = 1, and the demo): one SessionLB serving everything, until
 * SIGTERM/SIGINT (src/process/lifecycle.ts: signals, pid file, --watch).
 */
import type { Config } from '../config/model.js';
import type { EventLog } from '../observability/log.js';
import { ProcessLifecycle } from '../process/lifecycle.js';
import { SessionLB } from './sessionlb.js';

export interface ServeOptions {
  /** Config file reloaded on SIGHUP (and on change with `watch`); null = no reloads (demo). */
  reloadFile: string | null;
  watch: boolean;
  /** Human-readable access log lines (pino-pretty) instead of JSON. */
  pretty?: boolean;
}

/** Runs a balancer until SIGTERM/SIGINT, then drains, runs `onStop` and exits 0. */
export async function serve(config: Config, log: EventLog, onStop?: () => Promise<void>, options: ServeOptions = { reloadFile: null, watch: false }): Promise<void> {
  const lb = new SessionLB(config, { log, pretty: options.pretty ?? false, accessLogToStdout: true });
  await lb.start();
  const lifecycle = new ProcessLifecycle(log);
  lifecycle.writePidFile(config.pidFile);
  const reloadFile = options.reloadFile;
  if (reloadFile !== null && options.watch) lifecycle.watchConfig(reloadFile, lb);
  lifecycle.onSignals({
    reload: reloadFile === null ? null : () => {
      log.info({ file: reloadFile }, 'SIGHUP: reloading the configuration');
      void lb.reloadFromFile(reloadFile);
    },
    reopen: () => log.info({ reopened: lb.observability.reopenAccessLog() }, 'SIGUSR1: reopening the access log'),
    stop: (signal) => lifecycle.shutdown(async () => {
      log.info({ signal, timeoutMs: config.shutdownTimeoutMs }, 'shutting down: finishing requests in flight');
      await lb.stop();
      await onStop?.();
    }),
  });
}
