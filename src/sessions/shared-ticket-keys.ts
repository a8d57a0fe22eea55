/**
 * TLS session ticket keys shared by every sessionlb instance through memcached (the memcached
 * session store), so that a client resumes on whichever instance DNS round robin or an L4
 * balancer sends it to. Only the process that makes the keys (single process, cluster primary:
 * `makesTicketKeys` in src/runtime/role.ts) runs this; workers get the set over IPC as before.
 *
 * The record: one item, `<keyPrefix>tls-ticket-keys`, no expiry. Its value is base64 of
 *   version (1 byte, 1) | createdAt (8 bytes, ms since epoch, big endian) | IV (12) | tag (16) | ciphertext
 * where ciphertext = AES-256-GCM(current key (48) [| previous key (48)]), with version, createdAt
 * and the item's name as associated data (authenticated: a record moved to another name, or
 * with its time changed, does not open). The AES key is HKDF-SHA256 of `sessionStore.hashKey`
 * (or SESSIONLB_HASH_KEY), info "sessionlb tls ticket keys v1": instances with the same secret
 * read each other's record; a key derived from `keyPrefix` is no secret, so then nothing is
 * shared (src/runtime/sessionlb.ts decides, and warns).
 *
 * Agreement:
 * - `sync` reads the record (`gets`). Absent: the set in use is published with `add`, which only
 *   one of several instances starting at once wins; the others read again and adopt the winner's.
 * - A record whose current key is older than `rotateMs` is rotated with `cas` on the unique just
 *   read: [new, record's current]. One instance wins; the others get EXISTS, read again and adopt.
 * - A record older than one this instance already used (a replayed or stale write) is not adopted:
 *   it is replaced (`cas`) by the set in use.
 * - `sync` runs at `start` and then every `pollMs` (or sooner, when the record is due for rotation),
 *   plus up to 20% jitter, so every instance has a rotation within about one poll.
 * - A record that does not open (another secret, tampered, truncated) is never used nor
 *   overwritten: an error is logged (no key material, ever), counted, and the keys in use stay.
 * - memcached unreachable: the keys in use stay; the next poll tries again. While the set cannot be
 *   synced, the keys are still rotated locally after `rotateMs`. No handshake nor start waits on
 *   more than one bounded `sync`.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { TICKET_KEY_BYTES, type TicketKeys } from '../tls/ticket-keys.js';
import type { EventLog } from '../observability/log.js';

export const TICKET_KEYS_RECORD = 'tls-ticket-keys';
export const RECORD_VERSION = 1;
export const HKDF_INFO = 'sessionlb tls ticket keys v1';
/** How often the record is read again by default (plus jitter). */
export const DEFAULT_POLL_MS = 60_000;

const HEADER = 1 + 8;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Tries per sync when another instance wins a race (add or cas) in between. */
const ATTEMPTS = 3;

/** What the record is kept in: the memcached store's record calls (src/sessions/memcached-store.ts). */
export interface TicketKeyRecordStore {
  getsRecord(key: string): Promise<{ value: string; cas: string } | null>;
  addRecord(key: string, value: string, ttlSeconds: number): Promise<boolean>;
  casRecord(key: string, value: string, cas: string, ttlSeconds: number): Promise<'stored' | 'exists' | 'not_found'>;
  close(): Promise<void>;
}

/**
 * What happened in a sync, for `sessionlb_tls_ticket_key_sync_total{result}`: `adopted` (another
 * instance's set taken into use), `published` (this set written: first, or over a stale record),
 * `rotated` (this instance rotated the shared set), `rejected` (a record that does not open),
 * `store_error` (memcached did not answer), `local_rotation` (rotated here while not synced).
 */
export type TicketKeySyncResult = 'adopted' | 'published' | 'rotated' | 'rejected' | 'store_error' | 'local_rotation';

export interface SharedTicketKeysOptions {
  store: TicketKeyRecordStore;
  /** The memcached key of the record: `<keyPrefix>tls-ticket-keys`. */
  recordKey: string;
  /** The secret the AES key is derived from (sessionStore.hashKey or SESSIONLB_HASH_KEY). */
  secret: string;
  keys: TicketKeys;
  rotateMs: number;
  pollMs?: number;
  log: EventLog;
  onResult?: (result: TicketKeySyncResult) => void;
}

/** The AES-256-GCM key of the record, from the shared secret. */
export function recordKeyFromSecret(secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'utf8'), Buffer.alloc(0), HKDF_INFO, 32));
}

/** The record's value for `keys` ([current, previous?]) made at `createdAt`. */
export function sealTicketKeys(aesKey: Buffer, recordKey: string, keys: readonly Buffer[], createdAt: number): string {
  const header = Buffer.alloc(HEADER);
  header.writeUInt8(RECORD_VERSION, 0);
  header.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(createdAt))), 1);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', aesKey, iv);
  cipher.setAAD(Buffer.concat([header, Buffer.from(recordKey, 'latin1')]));
  const ciphertext = Buffer.concat([cipher.update(Buffer.concat(keys.slice(0, 2))), cipher.final()]);
  return Buffer.concat([header, iv, cipher.getAuthTag(), ciphertext]).toString('base64');
}

/** The keys and time of a record's value, or null when it does not open (wrong secret, tampered, truncated, unknown version). */
export function openTicketKeys(aesKey: Buffer, recordKey: string, value: string): { keys: Buffer[]; createdAt: number } | null {
  const raw = Buffer.from(value, 'base64');
  if (raw.length !== HEADER + IV_BYTES + TAG_BYTES + TICKET_KEY_BYTES && raw.length !== HEADER + IV_BYTES + TAG_BYTES + 2 * TICKET_KEY_BYTES) return null;
  if (raw.readUInt8(0) !== RECORD_VERSION) return null;
  const header = raw.subarray(0, HEADER);
  const iv = raw.subarray(HEADER, HEADER + IV_BYTES);
  const tag = raw.subarray(HEADER + IV_BYTES, HEADER + IV_BYTES + TAG_BYTES);
  const ciphertext = raw.subarray(HEADER + IV_BYTES + TAG_BYTES);
  try {
    const decipher = createDecipheriv('aes-256-gcm', aesKey, iv);
    decipher.setAAD(Buffer.concat([header, Buffer.from(recordKey, 'latin1')]));
    decipher.setAuthTag(tag);
    const plain = Buffer.concat([decipher.update(ciphertext), decipher.final()]);
    const keys = [plain.subarray(0, TICKET_KEY_BYTES)];
    if (plain.length === 2 * TICKET_KEY_BYTES) keys.push(plain.subarray(TICKET_KEY_BYTES));
    return { keys, createdAt: Number(header.readBigUInt64BE(1)) };
  } catch {
    return null;
  }
}

function sameKeys(a: readonly Buffer[], b: readonly Buffer[]): boolean {
  return a.length === b.length && a.every((k, i) => k.equals(b[i]!));
}

export class SharedTicketKeys {
  private readonly aesKey: Buffer;
  private readonly pollMs: number;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** createdAt of the newest record this instance adopted or wrote (a record older than it is not taken). */
  private newestSeen = 0;
  /** Log once per run of failures, and once when it works again. */
  private storeFailing = false;
  private rejecting = false;
  private running: Promise<void> | null = null;

  constructor(private readonly options: SharedTicketKeysOptions) {
    this.aesKey = recordKeyFromSecret(options.secret);
    this.pollMs = Math.max(10, options.pollMs ?? DEFAULT_POLL_MS);
  }

  /** The first sync (bounded by the store's timeouts; never rejects), then the polls. */
  async start(): Promise<void> {
    await this.syncNow();
    this.schedule();
  }

  /** No more polls; closes the store. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    await this.running?.catch(() => undefined);
    await this.options.store.close();
  }

  /** One sync (a sync already under way is joined). Never rejects. */
  syncNow(): Promise<void> {
    if (this.running === null) {
      this.running = this.sync().finally(() => { this.running = null; });
    }
    return this.running;
  }

  private schedule(): void {
    if (this.stopped) return;
    const keys = this.options.keys;
    const dueIn = keys.createdAt + this.options.rotateMs - Date.now();
    const base = Math.max(10, Math.min(this.pollMs, dueIn));
    const jitter = Math.random() * Math.min(this.pollMs, this.options.rotateMs) * 0.2;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.syncNow().then(() => this.schedule());
    }, base + jitter);
    this.timer.unref();
  }

  private async sync(): Promise<void> {
    const { store, recordKey, keys, log } = this.options;
    try {
      for (let attempt = 0; attempt < ATTEMPTS && !this.stopped; attempt++) {
        const record = await store.getsRecord(recordKey);
        if (record === null) {
          // No record (first instance, memcached restarted or evicted it): publish the set in use.
          if (await store.addRecord(recordKey, sealTicketKeys(this.aesKey, recordKey, keys.keys(), keys.createdAt), 0)) {
            this.newestSeen = Math.max(this.newestSeen, keys.createdAt);
            this.worked();
            this.result('published');
            log.info({ record: recordKey }, 'TLS ticket keys: published this instance\'s keys (encrypted) in memcached for the other instances');
            return;
          }
          continue; // another instance added it first: read theirs
        }
        const opened = openTicketKeys(this.aesKey, recordKey, record.value);
        this.worked();
        if (opened === null) {
          this.result('rejected');
          if (!this.rejecting) {
            this.rejecting = true;
            log.error({ record: recordKey },
              'TLS ticket keys: the record in memcached does not decrypt with this instance\'s key (sessionStore.hashKey or SESSIONLB_HASH_KEY differs between instances, or the record was altered); not using it, keeping this instance\'s own keys');
          }
          this.rotateLocallyIfDue();
          return;
        }
        if (this.rejecting) {
          this.rejecting = false;
          log.info({ record: recordKey }, 'TLS ticket keys: the record in memcached decrypts again; shared keys in use');
        }
        const now = Date.now();
        if (opened.createdAt < this.newestSeen) {
          // Older than a set already used here: a stale or replayed write. Put the set in use back.
          const r = await store.casRecord(recordKey, sealTicketKeys(this.aesKey, recordKey, keys.keys(), keys.createdAt), record.cas, 0);
          if (r === 'stored') {
            this.result('published');
            log.warn({ record: recordKey }, 'TLS ticket keys: the record in memcached was older than the keys in use; replaced it with them');
            return;
          }
          continue;
        }
        if (now - opened.createdAt >= this.options.rotateMs) {
          const next = [randomBytes(TICKET_KEY_BYTES), opened.keys[0]!];
          const r = await store.casRecord(recordKey, sealTicketKeys(this.aesKey, recordKey, next, now), record.cas, 0);
          if (r === 'stored') {
            this.newestSeen = now;
            keys.set(next, now);
            this.result('rotated');
            log.info({ record: recordKey }, 'TLS ticket keys: rotated the shared keys');
            return;
          }
          continue; // another instance rotated (or the record went) meanwhile: read again
        }
        this.newestSeen = Math.max(this.newestSeen, opened.createdAt);
        if (!sameKeys(opened.keys, keys.keys())) {
          keys.set(opened.keys, opened.createdAt);
          this.result('adopted');
          log.info({ record: recordKey }, 'TLS ticket keys: using the shared keys from memcached');
        }
        return;
      }
    } catch (err) {
      this.result('store_error');
      if (!this.storeFailing) {
        this.storeFailing = true;
        log.warn({ record: recordKey, err: (err as Error).message },
          'TLS ticket keys: memcached unavailable; keeping the keys in use, trying again at the next poll');
      }
      this.rotateLocallyIfDue();
    }
  }

  private worked(): void {
    if (!this.storeFailing) return;
    this.storeFailing = false;
    this.options.log.info({ record: this.options.recordKey }, 'TLS ticket keys: memcached answers again');
  }

  /** Not synced: the keys in use still rotate after `rotateMs`. */
  private rotateLocallyIfDue(): void {
    const keys = this.options.keys;
    if (Date.now() - keys.createdAt < this.options.rotateMs) return;
    keys.rotate();
    this.result('local_rotation');
  }

  private result(r: TicketKeySyncResult): void {
    this.options.onResult?.(r);
  }

  toJSON(): string {
    return '[SharedTicketKeys]';
  }

  [inspect.custom](): string {
    return '[SharedTicketKeys]';
  }
}
