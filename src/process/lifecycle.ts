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
  /** Other files the configuration in use reads (TLS certificates and keys): a change to one reloads too. */
  watchedFiles(): string[];
}

const ignore = (): void => undefined;

/** How long an exit waits after the last log line (so that it reaches its pipe). */
const EXIT_DELAY_MS = 50;
/** `--watch`: changes within this long of each other make one reload (an editor writes in steps). */
const WATCH_DEBOUNCE_MS = 300;

export class ProcessLifecycle {
  private readonly watchers = new Map<string, FSWatcher>();
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
   * `run --watch`: `reloader` reloads `file` when it changes (debounced), or when one of the files
   * the configuration in use reads does (`reloader.watchedFiles()`: certificates, so that a
   * certbot renewal needs no hook; the set is taken again after every change). Watches
   * directories, since editors and certbot replace files by renaming (certbot's live/ names are
   * symbolic links it replaces); shutdown() stops watching.
   */
  watchConfig(file: string, reloader: Reloader): void {
    const log = this.log;
    const configPath = resolve(file);
    let timer: NodeJS.Timeout | null = null;
    const names = new Map<string, Set<string>>(); // directory -> file names watched in it
    const onChange = (dir: string, changed: string | null): void => {
      if (changed !== null && !(names.get(dir)?.has(changed) ?? false)) return;
      if (timer !== null) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        log.info({ file: configPath, changed: changed === null ? dir : resolve(dir, changed) }, 'config file or a file it reads changed; reloading');
        void reloader.reloadFromFile(file).finally(() => watchAll());
      }, WATCH_DEBOUNCE_MS);
    };
    const watchAll = (): void => {
      if (this.exiting) return;
      const wanted = new Map<string, Set<string>>();
      for (const f of [configPath, ...reloader.watchedFiles().map((p) => resolve(p))]) {
        const dir = dirname(f);
        let set = wanted.get(dir);
        if (set === undefined) wanted.set(dir, set = new Set());
        set.add(basename(f));
      }
      for (const [dir, watcher] of this.watchers) {
        if (!wanted.has(dir)) {
          watcher.close();
          this.watchers.delete(dir);
        }
      }
      names.clear();
      for (const [dir, set] of wanted) {
        names.set(dir, set);
        if (this.watchers.has(dir)) continue;
        try {
          const watcher = watch(dir, (_event, changed) => onChange(dir, changed));
          watcher.on('error', (err) => log.error({ dir, err: err.message }, 'file watch failed'));
          this.watchers.set(dir, watcher);
        } catch (err) {
          log.error({ dir, err: (err as Error).message }, 'cannot watch this directory; SIGHUP still reloads');
        }
      }
    };
    watchAll();
  }

  /**
   * The way out, once (false when already under way): stops watching, runs `drain` (which
   * starts at once: it logs why and what it waits for), then removes the pid file, flushes
   * the log and exits with `exitCode`.
   */
  shutdown(drain: () => Promise<unknown>, exitCode = 0): boolean {
    if (this.exiting) return false;
    this.exiting = true;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    void drain().then(() => {
      this.removePid();
      this.log.flush?.();
      process.exitCode = exitCode;
      setTimeout(() => process.exit(exitCode), EXIT_DELAY_MS).unref();
    });
    return true;
  }
}
