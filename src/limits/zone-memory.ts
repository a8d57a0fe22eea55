/**
 * nginx's zone size semantics for `limit_req_zone` and `limit_conn_zone`: how many bytes one key
 * costs and how many bytes of a zone hold keys, so that a zone of the size an nginx config gives
 * keeps about as many keys as nginx's would ("One megabyte zone can keep about 16 thousand 64-byte
 * states or about 8 thousand 128-byte states").
 *
 * nginx keeps one node per key in a slab allocator over the shared memory zone (64-bit layout):
 * - a limit_req node is an rbtree node header up to `color` (32 bytes) followed by
 *   ngx_http_limit_req_node_t up to its key data (48 bytes: color, dummy, len, queue, last,
 *   excess, count): 80 bytes + the key;
 * - a limit_conn node is the same 32-byte header followed by ngx_http_limit_conn_node_t up to its
 *   key data (4 bytes: color, len, conn): 36 bytes + the key.
 * The slab allocator serves a request of up to half a page (2048 bytes) from a power-of-two slot
 * of at least 8 bytes, and a larger one with whole 4096-byte pages.
 *
 * Keys are byte strings (one char per byte, latin1): a key's length is its byte count.
 */

/** nginx's smallest zone: 8 pages (`zone "x" is too small` below it). */
export const MIN_ZONE_BYTES = 32768;

/** The page size the slab allocator works with (ngx_pagesize on the usual platforms). */
const PAGE_BYTES = 4096;
/** Requests above this take whole pages (ngx_slab_max_size: half a page). */
const SLAB_MAX_BYTES = PAGE_BYTES / 2;
/** The smallest slot (1 << ngx_slab_min_shift). */
const SLAB_MIN_BYTES = 8;
/** Per-page descriptor (ngx_slab_page_t: three words) that the pool keeps for every page. */
const PAGE_DESCRIPTOR_BYTES = 24;

/** Bytes of a limit_req node before its key data. */
export const REQ_NODE_HEADER_BYTES = 80;
/** Bytes of a limit_conn node before its key data. */
export const CONN_NODE_HEADER_BYTES = 36;

/**
 * The bytes the slab allocator actually takes for a request of `size` bytes: the next power of
 * two (at least 8) up to half a page, whole pages above.
 */
export function slabBytes(size: number): number {
  if (size > SLAB_MAX_BYTES) return Math.ceil(size / PAGE_BYTES) * PAGE_BYTES;
  let slot = SLAB_MIN_BYTES;
  while (slot < size) slot *= 2;
  return slot;
}

/** Bytes one limit_req key of `keyLength` bytes takes in its zone (80 + key, slab-rounded). */
export function reqNodeBytes(keyLength: number): number {
  return slabBytes(REQ_NODE_HEADER_BYTES + keyLength);
}

/** Bytes one limit_conn key of `keyLength` bytes takes in its zone (36 + key, slab-rounded). */
export function connNodeBytes(keyLength: number): number {
  return slabBytes(CONN_NODE_HEADER_BYTES + keyLength);
}

/**
 * The bytes of a zone of `size` bytes that can hold nodes: `floor(size * 4096 / 4120) - 4096`.
 * nginx's slab pool spends, out of the zone, one 24-byte descriptor per 4096-byte page (so every
 * page really costs 4120 bytes), and the pool header, its slot table, statistics, the module's
 * tree and queue heads and its log text at the start; one page models that fixed part. For 1 MiB
 * this gives 1038371 bytes: 16224 nodes of 64 bytes or 8112 of 128, nginx's "about 16 thousand"
 * and "about 8 thousand".
 */
export function zoneCapacityBytes(size: number): number {
  return Math.floor((size * PAGE_BYTES) / (PAGE_BYTES + PAGE_DESCRIPTOR_BYTES)) - PAGE_BYTES;
}

/** Throws nginx's error for a zone smaller than MIN_ZONE_BYTES (or not a whole byte count). */
export function checkZoneSize(name: string, sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < MIN_ZONE_BYTES) {
    throw new RangeError(`zone "${name}" is too small (${sizeBytes} bytes; at least ${MIN_ZONE_BYTES})`);
  }
}
