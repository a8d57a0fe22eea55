/**
 * Reusable 64 KiB buffers for upstream response body bytes that outlive a read.
 *
 * Pooled upstream connections read into one shared buffer (raw-pool.ts), so body bytes
 * handed to the client socket must be copied out first. A fresh 64 KiB Buffer per copy costs
 * more than the copy itself (new, untouched pages: ~16 us each, then GC of the external memory):
 * ~40% of the proxy's CPU for a 1 MiB response. `copyOut` copies into a buffer from a free list
 * instead, and `release` gives it back once the client socket has written it (the write's
 * callback; see ForwardRequest.onBodyChunk). A buffer that is never released (client gone,
 * response aborted) is simply left to the GC: the pool only ever loses buffers, never shares one.
 *
 * Small chunks are copied with `Buffer.from`, which slices node's shared 8 KiB pool (cheap).
 */

export const CHUNK_SIZE = 64 * 1024;
/** Chunks shorter than this use Buffer.from (node's own pool). */
const POOLED_MIN = 4 * 1024;
/** Free buffers kept for reuse (8 MiB); more are left to the GC. */
const MAX_FREE = 128;

const free: Buffer[] = [];
/** Views handed out and not yet released: `release` ignores any other buffer (node's, a second release). */
const outstanding = new WeakSet<Buffer>();

export const bodyChunkStats = { allocated: 0, reused: 0, released: 0 };

/** A copy of `src` (at most CHUNK_SIZE bytes) that shares no memory with it. */
export function copyOut(src: Buffer): Buffer {
  const n = src.length;
  if (n < POOLED_MIN || n > CHUNK_SIZE) return Buffer.from(src);
  let slab = free.pop();
  if (slab === undefined) {
    slab = Buffer.allocUnsafeSlow(CHUNK_SIZE);
    bodyChunkStats.allocated++;
  } else {
    bodyChunkStats.reused++;
  }
  src.copy(slab, 0, 0, n);
  const chunk = slab.subarray(0, n);
  outstanding.add(chunk);
  return chunk;
}

/**
 * Gives a chunk from `copyOut` back once nothing holds it any more (the client socket wrote it).
 * Anything else is ignored, so callers may pass every chunk they wrote.
 */
export function release(chunk: Buffer): void {
  if (!outstanding.delete(chunk)) return;
  bodyChunkStats.released++;
  if (free.length < MAX_FREE) free.push(Buffer.from(chunk.buffer, 0, CHUNK_SIZE));
}
