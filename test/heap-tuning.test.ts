/**
 * `sessionlb run` bounds V8's heap growth factor (src/process/heap-tuning.ts, issue 7 goal 5) unless
 * node was started with its own `--heap-growing-percent`. Its effect on RSS is a benchmark
 * (bench/sessions-rss.mjs; docs/decisions/bench-journal.md, goal 5), not a test: GC timing varies
 * run to run.
 */
import { describe, expect, it } from 'vitest';
import { HEAP_GROWING_PERCENT, YOUNG_GENERATION_FLAG, tuneHeapGrowth, tunePretenuring, workerExecArgv } from '../src/process/heap-tuning.js';

describe('heap growth tuning', () => {
  it('leaves a --heap-growing-percent given on node\'s command line alone, sets it otherwise', () => {
    expect(tuneHeapGrowth(['--heap-growing-percent=0'])).toBe(false);
    expect(tuneHeapGrowth(['--inspect', '--heap_growing_percent=50'])).toBe(false);
    expect(tuneHeapGrowth(['--max-semi-space-size=4'])).toBe(true);
    expect(HEAP_GROWING_PERCENT).toBeGreaterThan(0);
  });

  it('turns allocation-site pretenuring off unless node was given a pretenuring flag', () => {
    expect(tunePretenuring(['--allocation-site-pretenuring'])).toBe(false);
    expect(tunePretenuring(['--no-allocation_site_pretenuring'])).toBe(false);
    expect(tunePretenuring(['--max-semi-space-size=8'])).toBe(true);
  });

  it('cluster workers get the bounded young generation unless node was given a semi-space size', () => {
    expect(workerExecArgv([])).toEqual([YOUNG_GENERATION_FLAG]);
    expect(workerExecArgv(['--inspect'])).toEqual(['--inspect', YOUNG_GENERATION_FLAG]);
    expect(workerExecArgv(['--max-semi-space-size=32'])).toEqual(['--max-semi-space-size=32']);
    expect(workerExecArgv(['--max_semi_space_size=2'])).toEqual(['--max_semi_space_size=2']);
  });
});
