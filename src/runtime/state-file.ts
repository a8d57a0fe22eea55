/**
 * `stateFile`, for a role that keeps it (SINGLE_PROCESS, the cluster primary): the servers'
 * runtime state (admin drain/maint/weight) restored at start and written after each change
 * (the format and the writes: src/admin/state.ts).
 */
import type { Upstream } from '../balancer/upstream.js';
import type { EventLog } from '../observability/log.js';
import { StateFileWriter, applyRuntimeState, readStateFile } from '../admin/state.js';

export class RuntimeStateFile {
  private readonly writer: StateFileWriter;

  constructor(private readonly log: EventLog) {
    this.writer = new StateFileWriter(log);
  }

  /** Applies what `file` holds to `upstreams`; a missing or unreadable file is logged, and changes nothing. */
  async restore(file: string, upstreams: ReadonlyMap<string, Upstream>, maintenance?: Set<string>): Promise<void> {
    try {
      const saved = await readStateFile(file);
      if (saved !== null) applyRuntimeState(upstreams, saved, this.log);
      for (const name of saved?.maintenance ?? []) {
        maintenance?.add(name);
        this.log.info({ server: name, maintenance: true }, `virtual server ${name} is in maintenance (restored from stateFile)`);
      }
    } catch (err) {
      this.log.error({ stateFile: file, err: (err as Error).message }, 'cannot read stateFile; starting without saved runtime state');
    }
  }

  /** Queues a write of the state of `upstreams` to `file` (when set). */
  save(file: string | null, upstreams: ReadonlyMap<string, Upstream>, maintenance?: ReadonlySet<string>): Promise<void> {
    if (file === null) return Promise.resolve();
    return this.writer.save(file, upstreams, maintenance);
  }

  /** Waits for the writes queued. */
  flush(): Promise<void> {
    return this.writer.flush();
  }
}
