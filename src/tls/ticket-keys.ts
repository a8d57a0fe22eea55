/**
 * Session ticket keys (nginx ssl_session_tickets on): 48 random bytes (16 name, 16 HMAC, 16 AES),
 * a new key at least daily, the previous one kept.
 *
 * What node supports: ONE key at a time (`ticketKeys` of tls.createServer / createSecureContext,
 * `server.setTicketKeys(48 bytes)`); node's own ticket callback decrypts only tickets named by
 * that key. So after a rotation, tickets made under the previous key are not resumed: the client
 * gets a full handshake and a new ticket (no error). With a daily rotation and nginx's 5 minute
 * session timeout, that is one extra full handshake for clients resuming in the minutes after the
 * rotation. `previous` is kept anyway, in `keys()`, so that a set shared between workers or
 * instances (`set(keys)` from outside: the cluster primary's IPC, and the record in memcached of
 * src/sessions/shared-ticket-keys.ts) carries both, ready for a runtime that can decrypt with
 * more than one key.
 *
 * The keys are secrets: never logged (`toJSON` and util.inspect print no bytes).
 */
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';

export const TICKET_KEY_BYTES = 48;
export const DEFAULT_ROTATE_MS = 24 * 3600 * 1000;

export class TicketKeys {
  private currentKey: Buffer;
  private previousKey: Buffer | null = null;
  private readonly listeners = new Set<(current: Buffer) => void>();
  private timer: NodeJS.Timeout | null = null;
  private madeAt = Date.now();

  constructor(readonly rotateEveryMs = DEFAULT_ROTATE_MS) {
    this.currentKey = randomBytes(TICKET_KEY_BYTES);
  }

  /** The key tickets are made and read with now. */
  get current(): Buffer {
    return this.currentKey;
  }

  /** The key before the last rotation (node cannot use it yet: see the file's comment). */
  get previous(): Buffer | null {
    return this.previousKey;
  }

  /** When the current key was made (ms since epoch): by `rotate`, or as given to `set`. */
  get createdAt(): number {
    return this.madeAt;
  }

  /** [current, previous?]: what to hand to another worker or instance (`set`). */
  keys(): Buffer[] {
    return this.previousKey === null ? [this.currentKey] : [this.currentKey, this.previousKey];
  }

  /** A new random current key; the current one becomes the previous. */
  rotate(): void {
    this.apply(randomBytes(TICKET_KEY_BYTES), this.currentKey, Date.now());
  }

  /**
   * Keys from outside (shared across workers or instances): `keys[0]` is the current key,
   * `keys[1]` (optional) the previous. Each must be 48 bytes. Copies are kept. `createdAt`: when
   * the current key was made (default now).
   */
  set(keys: readonly Buffer[], createdAt = Date.now()): void {
    const [current, previous] = keys;
    if (current === undefined || keys.length > 2) throw new RangeError('ticket keys: one or two keys (current, previous)');
    for (const k of keys) {
      if (!Buffer.isBuffer(k) || k.length !== TICKET_KEY_BYTES) throw new RangeError(`ticket keys: each key is ${TICKET_KEY_BYTES} bytes`);
    }
    this.apply(Buffer.from(current), previous === undefined ? null : Buffer.from(previous), createdAt);
  }

  /** Called with the new current key after `rotate` or `set`; returns the way to unsubscribe. */
  onChange(listener: (current: Buffer) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Rotates every `rotateEveryMs` (an unref'd timer) until `stop`. Not for a worker whose keys come from outside. */
  start(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => this.rotate(), this.rotateEveryMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  toJSON(): string {
    return '[TicketKeys]';
  }

  [inspect.custom](): string {
    return '[TicketKeys]';
  }

  private apply(current: Buffer, previous: Buffer | null, createdAt: number): void {
    this.currentKey = current;
    this.madeAt = createdAt;
    this.previousKey = previous;
    for (const l of this.listeners) l(current);
  }
}
