/**
 * A cluster worker (`workers` > 1): serves the listeners (node:cluster shares them between
 * workers), with the primary's view of every server's health and runtime state, and — with
 * the memory store — the primary's session bindings (IpcStore behind a local cache).
 * Passive failure accounting (max_fails) stays per worker, as in nginx's workers.
 */
import cluster from 'node:cluster';
import { loadConfigFile, loadConfigText } from '../config/load.js';
import { type Config } from '../config/model.js';
import { SessionLB } from './sessionlb.js';
import { CLUSTER_WORKER } from './role.js';
import { statusDocument } from '../admin/api.js';
import type { EventLog } from '../observability/log.js';
import { SessionManager } from '../sessions/manager.js';
import { IpcStore } from './ipc-store.js';
import { IpcLimitDecider } from './ipc-limits.js';
import { ProcessLifecycle } from '../process/lifecycle.js';
import { applyStates, isOurs, type PeerState, type ToPrimary, type ToWorker } from './ipc.js';

/** Metrics the primary reports itself (server state from its own view, health probes, reloads): not summed over workers. */
export const PRIMARY_ONLY_METRICS: ReadonlySet<string> = new Set([
  'sessionlb_upstream_server_up',
  'sessionlb_upstream_server_state',
  'sessionlb_upstream_server_weight',
  'sessionlb_health_checks_total',
  'sessionlb_config_reloads_total',
  'sessionlb_config_last_reload_success_timestamp_seconds',
  // The zones are the primary's (a worker's own serve only when the primary does not answer).
  'sessionlb_limit_zone_keys',
  'sessionlb_limit_zone_evictions_total',
  'sessionlb_limit_zone_allocation_failures_total',
]);

/** How long a limited request waits for the primary's decision before this worker decides alone. */
const LIMIT_ANSWER_TIMEOUT_MS = 2000;

function send(message: ToPrimary): boolean {
  if (process.send === undefined || !process.connected) return false;
  return process.send(message);
}

export async function runWorker(configFile: string, baseLog: EventLog, options: { pretty: boolean; onConfig?: (config: Config) => void }): Promise<void> {
  const id = cluster.worker?.id ?? 0;
  const log = baseLog.child({ worker: id });
  const stores = new Set<IpcStore>();
  let lb: SessionLB | null = null;
  let limits: IpcLimitDecider | null = null;
  let gotState: ((states: PeerState[]) => void) | null = null;
  let gotConfig: ((text: string | null) => void) | null = null;
  const lifecycle = new ProcessLifecycle(log);
  const stop = (why: string): void => {
    lifecycle.shutdown(async () => {
      if (lb === null) {
        // Still loading the config: nothing to drain.
        process.exit(0);
      }
      log.info({ why, timeoutMs: lb.config.shutdownTimeoutMs }, 'worker shutting down: finishing requests in flight');
      await lb.stop();
    });
  };

  // Listen from the start: a `stop` sent while this worker is still starting must not be lost.
  // The primary decides about reloads and reopens the access logs (SIGHUP and SIGUSR1 go to it);
  // a terminal's signals reach the whole group.
  lifecycle.onSignals({ reload: 'ignore', reopen: 'ignore', stop });
  process.on('message', (message: unknown) => {
    if (!isOurs<ToWorker>(message)) return;
    if (message.sl === 'stop') {
      stop('primary');
      return;
    }
    if (message.sl === 'config') {
      gotConfig?.(message.text);
      gotConfig = null;
      return;
    }
    if (lb === null) return;
    switch (message.sl) {
      case 'limit-res':
        limits?.answer(message);
        return;
      case 'store-res':
        for (const s of stores) s.answer(message.r);
        return;
      case 'state':
        if (message.maint !== undefined) {
          lb.maintenance.clear();
          for (const name of message.maint) lb.maintenance.add(name);
        }
        if (gotState !== null) {
          gotState(message.peers);
          gotState = null;
        } else {
          applyStates(lb.upstreams, message.peers, Date.now());
        }
        return;
      case 'status-req': {
        const doc = statusDocument(lb);
        send({ sl: 'status-res', id: message.id, doc });
        return;
      }
      case 'metrics-req':
        lb.observability.metrics.json().then(
          (metrics) => send({ sl: 'metrics-res', id: message.id, metrics: metrics.filter((m) => !PRIMARY_ONLY_METRICS.has(m.name)) }),
          (err: unknown) => {
            log.error({ err: (err as Error).message }, 'metrics collection failed');
            send({ sl: 'metrics-res', id: message.id, metrics: [] });
          },
        );
        return;
      case 'reload': {
        // Reloads run one at a time (SessionLB's queue): lastReloadError is this one's when it resolves.
        const current = lb;
        const id = message.id;
        void (message.text === null ? current.reloadFromFile(configFile) : current.reloadFromText(message.text, configFile))
          .then((ok) => send({ sl: 'reloaded', id, ok, error: ok ? null : current.lastReloadError ?? 'reload failed' }));
        return;
      }
      case 'reopen':
        lb.observability.reopenAccessLog();
        return;
      case 'tls-keys':
        lb.ticketKeys.set(message.keys.map((k) => Buffer.from(k, 'base64')));
        return;
    }
  });

  // The config the primary runs, as text: the file may have changed since (an edit not yet
  // reloaded, or one that failed to load) and a replacement worker must not pick that up.
  const text = await new Promise<string | null>((resolve) => {
    const timer = setTimeout(() => { gotConfig = null; resolve(null); }, 5_000);
    gotConfig = (t) => { clearTimeout(timer); resolve(t); };
    send({ sl: 'config-req' });
  });
  if (lifecycle.stopping) return;
  if (text === null) log.warn({ file: configFile }, 'no config from the primary within 5s; reading the file');
  const config = text === null ? await loadConfigFile(configFile) : await loadConfigText(text, configFile);
  options.onConfig?.(config);
  SessionManager.sharedMemoryStore = (c) => {
    const store = new IpcStore(send, c.timeoutMs, (closed) => stores.delete(closed));
    stores.add(store);
    return store;
  };
  lb = new SessionLB(config, { log, pretty: options.pretty, accessLogToStdout: true, role: CLUSTER_WORKER });
  // limit_req / limit_conn zones are the primary's (shared by every worker, as nginx's).
  const metrics = lb.observability.metrics;
  let lastLogged = 0;
  // process.send() returns false when its queue is long, yet sends: only a closed channel is "not sent".
  const sendQueued = (message: ToPrimary): boolean => {
    if (process.send === undefined || !process.connected) return false;
    process.send(message);
    return true;
  };
  limits = new IpcLimitDecider(sendQueued, lb.localLimits, LIMIT_ANSWER_TIMEOUT_MS, (zones) => {
    for (const zone of zones) metrics.limitSharedFallback(zone, 'primary');
    const now = Date.now();
    if (now - lastLogged < 10_000) return;
    lastLogged = now;
    log.warn({ zones }, `the primary did not decide limits within ${LIMIT_ANSWER_TIMEOUT_MS} ms: this worker limits alone meanwhile`);
  });
  lb.limitDecider = limits;
  if (lifecycle.stopping) return;

  // The primary's view of health and runtime state before this worker takes its first request.
  const states = await new Promise<PeerState[] | null>((resolve) => {
    const timer = setTimeout(() => { gotState = null; resolve(null); }, 5_000);
    gotState = (s) => { clearTimeout(timer); resolve(s); };
    send({ sl: 'hello' });
  });
  if (states !== null) applyStates(lb.upstreams, states, Date.now());
  else log.warn('no server state from the primary within 5s; starting with every server healthy');

  if (lifecycle.stopping) return; // told to stop while starting
  await lb.start();
  send({ sl: 'listening' });
}
