/**
 * A location's limits as the deciders take them: by zone name, with nginx's numbers (what a
 * cluster worker sends its primary).
 */

/** One limit_req of a location, by zone name (what crosses the IPC channel). */
export interface RequestRule {
  readonly zone: string;
  /** The zone's rate (nginx: r/s x 1000). */
  readonly rate: number;
  /** nginx burst x 1000. */
  readonly burst: number;
  /** nginx delay x 1000 (nodelay: Number.MAX_SAFE_INTEGER). */
  readonly delay: number;
  /** Counted in memcached (`"shared": true`). */
  readonly shared: boolean;
}

/** One limit_conn of a location. */
export interface ConnectionRule {
  readonly zone: string;
  readonly conn: number;
}
