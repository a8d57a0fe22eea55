/**
 * The life of a sessionlb process, whatever its role (single process, cluster primary,
 * cluster worker): which signals do what, the pid file, `run --watch`, and the way out
 * (drain, remove the pid file, flush the log, exit).
 *
 *   SIGTERM, SIGINT   stop: drain (shutdownTimeout), then exit
 *   SIGHUP            reload the config file (nginx -s reload); ignored by a cluster worker
 *                     (its primary reloads); node's default (exit) where there is no file (demo)
 *   SIGUSR1           reopen the access log (nginx -s reopen); ignored by a cluster worker
 *                     (its primary has the workers reopen theirs)
 */
import { readFileSync, unlinkSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { EventLog } from '../observability/log.js';

/** What the signals do; 'ignore' takes a signal and does nothing, null leaves node's default. */
export interface SignalHandlers {
  /** SIGTERM and SIGINT. */
  stop(signal: string): void;
  /** SIGHUP. */
  reload: (() => void) | 'ignore' | null;
  /** SIGUSR1. */
  reopen: (() => void) | 'ignore';
}

/** What `--watch` reloads. */
export interface Reloader {
  reloadFromFile(file: string): Promise<unknown>;
}

const ignore = (): void => undefined;

/** How long an exit waits after the last log line (so that it reaches its pipe). */
const EXIT_DELAY_MS = 50;
/** `--watch`: changes within this long of each other make one reload (an editor writes in steps). */
const WATCH_DEBOUNCE_MS = 300;

export class ProcessLifecycle {
  private watcher: FSWatcher | null = null;
  private removePid: () => void = ignore;
  private exiting = false;

  constructor(private readonly log: EventLog) {}

  /** True once shutdown() ran. */
  get stopping(): boolean {
    return this.exiting;
  }

  /** Installs the signal handlers (see the top of this file). */
  onSignals(handlers: SignalHandlers): void {
    const { reload, reopen } = handlers;
    if (reload !== null) process.on('SIGHUP', reload === 'ignore' ? ignore : reload);
    process.on('SIGUSR1', reopen === 'ignore' ? ignore : reopen);
    process.on('SIGTERM', () => handlers.stop('SIGTERM'));
    process.on('SIGINT', () => handlers.stop('SIGINT'));
  }

  /** Writes this process's pid to `file` (when set); shutdown() removes it if it still holds this pid. */
  writePidFile(file: string | null): void {
    if (file === null) return;
    const path = resolve(file);
    try {
      writeFileSync(path, `${process.pid}\n`);
    } catch (err) {
      this.log.error({ pidFile: path, err: (err as Error).message }, 'cannot write pidFile');
      return;
    }
    this.removePid = () => {
      try {
        if (readFileSync(path, 'utf8').trim() === String(process.pid)) unlinkSync(path);
      } catch {
        // already gone
      }
    };
  }

  /**
   * `run --watch`: `reloader` reloads `file` when it changes (debounced). Watches the
   * directory, since editors replace files by renaming; shutdown() stops watching.
   */
  watchConfig(file: string, reloader: Reloader): void {
    const log = this.log;
    const path = resolve(file);
    const name = basename(path);
    let timer: NodeJS.Timeout | null = null;
    try {
      this.watcher = watch(dirname(path), (_event, changed) => {
        if (changed !== null && changed !== name) return;
        if (timer !== null) clearTimeout(timer);
        timer = setTimeout(() => {
          timer = null;
          log.info({ file: path }, 'config file changed; reloading');
          void reloader.reloadFromFile(file);
        }, WATCH_DEBOUNCE_MS);
      });
      this.watcher.on('error', (err) => log.error({ file: path, err: err.message }, 'config file watch failed'));
    } catch (err) {
      log.error({ file: path, err: (err as Error).message }, 'cannot watch the config file; SIGHUP still reloads');
    }
  }

  /**
   * The way out, once (false when already under way): stops watching, runs `drain` (which
   * starts at once: it logs why and what it waits for), then removes the pid file, flushes
   * the log and exits with `exitCode`.
   */
  shutdown(drain: () => Promise<unknown>, exitCode = 0): boolean {
    if (this.exiting) return false;
    this.exiting = true;
    this.watcher?.close();
    this.watcher = null;
    void drain().then(() => {
      this.removePid();
      this.log.flush?.();
      process.exitCode = exitCode;
      setTimeout(() => process.exit(exitCode), EXIT_DELAY_MS).unref();
    });
    return true;
  }
}
