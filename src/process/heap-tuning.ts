/**
 * V8 heap growth for a long-running proxy (issue 7 goal 5: RSS with 1M sessions seen).
 *
 * After each full GC, V8 lets the old generation grow to a multiple of what survived before
 * it collects again; when collections are cheap (a proxy's usual case) it picks a large factor
 * (up to 4x). With the memcached store every new session promotes a little per-request garbage
 * (store calls through memcache-client, local-cache entries replaced in the LRU), so the heap
 * rode at 3-4x its ~45 MiB of live data: 200-280 MiB RSS after 1M sessions. A fixed factor of
 * 2 keeps it near 175 MiB with no throughput or p99 cost we could measure (1.6: ~160 MiB, 1.3:
 * ~150 MiB, but then more full GCs: fewer req/s and a higher p99 in the sticky scenario; see
 * docs/decisions/bench-journal.md, goal 5). Unlike a cap such as `--max-old-space-size`, it
 * never turns growth of live data into an out-of-memory crash.
 *
 * Applied only when the config uses the memcached store (src/cli.ts tuneHeapFor): the memory
 * store keeps its bindings outside the JS heap, and the bounded factor costs large responses
 * ~10-15% CPU (more full GCs while 64 KiB body chunks are in flight).
 *
 * `--heap-growing-percent` is read by V8 at every full GC, so setting it at startup works
 * (it is not accepted in NODE_OPTIONS). A value given on node's command line wins
 * (`node --heap-growing-percent=0 dist/cli.js run ...` restores V8's own heuristics).
 */
import v8 from 'node:v8';

export const HEAP_GROWING_PERCENT = 100;

/**
 * V8's young generation: at most 8 MiB per semi-space instead of the default 16. A proxy's
 * per-request garbage dies young whatever the size, so scavenges come twice as often but cost
 * the same each: on the bench (wrk -c64, proxy pinned) req/s and CPU per request did not move
 * (plain, sticky, 1 MiB bodies; interleaved pairs), while peak RSS fell from 99-101 to 85-86 MiB
 * (plain) and from 114-122 to ~100 MiB (sticky, memcached). Unlike the growth factor, the size is
 * fixed when V8 starts, so it is a node option: the npm scripts, the Dockerfile and cluster
 * workers (`workerExecArgv`) pass it; `node dist/cli.js run` alone keeps V8's default.
 */
export const YOUNG_GENERATION_FLAG = '--max-semi-space-size=8';

/** Node options for a cluster worker: the primary's, plus YOUNG_GENERATION_FLAG unless a size was given. */
export function workerExecArgv(execArgv: readonly string[] = process.execArgv): string[] {
  const given = execArgv.some((a) => a.startsWith('--max-semi-space-size') || a.startsWith('--max_semi_space_size'));
  return given ? [...execArgv] : [...execArgv, YOUNG_GENERATION_FLAG];
}

/** Sets V8's heap growing factor for this process unless node was started with one. */
export function tuneHeapGrowth(execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some((a) => a.startsWith('--heap-growing-percent') || a.startsWith('--heap_growing_percent'))) return false;
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  return true;
}

/**
 * V8's allocation-site pretenuring, off. V8 watches how many objects of each allocation site
 * survive scavenges; a site whose objects mostly survive is switched to allocate straight into
 * the old generation, and once there it gives no more feedback, so the switch sticks. A proxy's
 * per-request objects survive only while requests wait: a burst of waiting requests at the wrong
 * moment (10,000 new sessions each asking memcached at start) can switch hot per-request sites
 * for the life of the process. Every request then leaves its objects in the old generation: on
 * the sticky bench, a Mark-Compact every ~250 ms, scavenges 4x slower, 24.7-26.2k instead of
 * 30-33k req/s. That happened in 5 of 27 runs; with pretenuring off, in 0 of 18
 * (docs/decisions/bench-journal.md). Nothing a proxy allocates in bulk needs pretenuring: objects
 * that do live long (bindings, pools) are promoted after two scavenges anyway.
 *
 * Read by V8 at every scavenge and when sites are created, so setting it at startup works, as
 * for the growth factor. A pretenuring flag given on node's command line wins.
 */
export function tunePretenuring(execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some((a) => /^--(no-)?allocation[-_]site[-_]pretenuring/.test(a))) return false;
  v8.setFlagsFromString('--no-allocation-site-pretenuring');
  return true;
}
