/**
 * src/limits/zone-memory.ts: nginx's zone size semantics (64-bit node layouts, slab rounding,
 * usable bytes of a zone) against the numbers nginx's docs give.
 */
import { describe, expect, it } from 'vitest';
import {
  connNodeBytes, MIN_ZONE_BYTES, reqNodeBytes, slabBytes, zoneCapacityBytes,
} from '../src/limits/zone-memory.js';

const MB = 1024 * 1024;

describe('zone memory', () => {
  it('a node costs its header + key, in a power-of-two slot of at least 8 bytes', () => {
    expect([slabBytes(1), slabBytes(8), slabBytes(9), slabBytes(64), slabBytes(65)]).toEqual([8, 8, 16, 64, 128]);
    // limit_req: 80 + key. $binary_remote_addr (4 bytes): 128 ("128-byte states" on 64-bit).
    expect([reqNodeBytes(0), reqNodeBytes(4), reqNodeBytes(48), reqNodeBytes(49), reqNodeBytes(16)]).toEqual([128, 128, 128, 256, 128]);
    // limit_conn: 36 + key. $binary_remote_addr: 64 ("64 bytes on 64-bit platforms").
    expect([connNodeBytes(4), connNodeBytes(28), connNodeBytes(29), connNodeBytes(255)]).toEqual([64, 64, 128, 512]);
  });

  it('above half a page the slab allocator takes whole pages', () => {
    expect(reqNodeBytes(2048 - 80)).toBe(2048);
    expect(reqNodeBytes(2049 - 80)).toBe(4096);
    expect(reqNodeBytes(4097 - 80)).toBe(8192);
    expect(reqNodeBytes(8193 - 80)).toBe(12288); // 3 pages, not 16384
    expect(reqNodeBytes(65535)).toBe(17 * 4096);
  });

  it('usable bytes: floor(size × 4096 / 4120) - 4096; 1 MB keeps about 16 thousand 64-byte or 8 thousand 128-byte states', () => {
    expect(zoneCapacityBytes(MIN_ZONE_BYTES)).toBe(28481);
    expect(zoneCapacityBytes(MB)).toBe(1038371);
    expect(Math.floor(zoneCapacityBytes(MB) / 64)).toBe(16224);
    expect(Math.floor(zoneCapacityBytes(MB) / 128)).toBe(8112);
    // limit_req_zone ... zone=one:10m: "about 160 thousand" 64-byte states (80 thousand of 128).
    expect(Math.floor(zoneCapacityBytes(10 * MB) / 64)).toBe(162821);
    expect(MIN_ZONE_BYTES).toBe(8 * 4096);
  });
});
