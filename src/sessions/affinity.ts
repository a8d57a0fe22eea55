/**
 * Session affinity for one upstream (one object per config; the store, local cache and
 * counters behind it outlive reloads). The proxy calls, per request:
 *
 *   begin(r, headers, now)  read and validate the session cookie; start the lookup (learn)
 *   choose(r, now)          at the first pick: the bound server, acquired, or null (balancer)
 *   onResponse(r, peer, upstreamHeaders, clientHeaders, now)
 *                           learn from Set-Cookie / rebind / insert our cookie; sets r.outcome
 *
 * Modes:
 * - learn:  the backend's `Set-Cookie: <cookie>=<id>` binds id -> server (store, `ttl`);
 *           a deleting Set-Cookie removes it; an unknown id is bound to the server that answers.
 * - cookie: sessionlb's own signed cookie names the server (no store).
 * - hash:   consistent hash (ketama, src/balancer/hash.ts) of the session cookie over the servers;
 *           when the hashed server cannot take it, the next one on the ring (no store).
 * - source: learn, keyed by the client address cut to `mask` (sourceSessionId) instead of a
 *           cookie: a client unknown or moved is bound to the server that answered (HTTP) or
 *           took the connection (streams: `onConnected`), in the same store, the same way.
 *
 * A bound server that cannot take the request (down, failed, unhealthy, maint, maxConns,
 * removed by reload) is replaced by the balancer's pick and the session rebound (counted).
 * A drained server keeps its bound sessions (Peer.unavailable, Taking.Bound) and gets no new ones;
 * in source mode its clients move too (the rule for L4: a client moves when its server
 * fails, is drained or removed), since a client address has no session that ends by itself.
 */
import type { IncomingMessage } from 'node:http';
import type { StickyConfig } from '../config/model.js';
import { Taking, type Peer, type Unavailable } from '../balancer/peer.js';
import type { Upstream } from '../balancer/upstream.js';
import type { PickRequest } from '../balancer/policy.js';
import { ConsistentHash } from '../balancer/hash.js';
import type { CompiledTemplate, VariableSource } from '../nginx-language/variables.js';
import { equalsLower } from '../nginx-language/header-tokens.js';
import { findCookie, parseSetCookie, sessionIdFromCookieHeader, sourceSessionId, type SessionIdRules } from './session-id.js';
import { CookieSigner, ownCookieHeader, stripCookie } from './signed-cookie.js';
import type { CacheLookupResult, LocalCache, LookupWaiter } from './local-cache.js';
import type { MemoryStore } from './memory-store.js';
import { localKey } from './store.js';

/** How a request's session was looked up (metric `sessionlb_sticky_lookups_total{result}`). */
export type StickyLookupResult =
  | 'local_hit' // answered in this process: local cache, memory store, a valid signed cookie, or the hash
  | 'store_hit' // answered by memcached
  | 'miss' // a valid id with no binding
  | 'invalid_id' // not a valid id (bad characters, length, given twice with different values), or a forged/stale signed cookie: no session
  | 'store_error'; // memcached failed or timed out (or its breaker is open): routed from a stale local entry or the balancer

/** cookie mode: why a sessionlb cookie was ignored (counted apart; the lookup counts as `invalid_id`). */
export type RejectedCookie = 'forged' | 'stale';

/** Why a session left its server (metric `sessionlb_sticky_rebinds_total{reason}`). */
export type RebindReason = Unavailable | 'removed';

/** Plain counters per upstream (kept across reloads), for metrics and /status. */
export class AffinityStats {
  readonly lookups: Record<StickyLookupResult, number> = { local_hit: 0, store_hit: 0, miss: 0, invalid_id: 0, store_error: 0 };
  /** cookie mode: ignored cookies by reason (each also counted in lookups.invalid_id). */
  readonly rejectedCookies: Record<RejectedCookie, number> = { forged: 0, stale: 0 };
  readonly rebinds: Record<RebindReason, number> = { down: 0, failed: 0, unhealthy: 0, maint: 0, maxconns: 0, drain: 0, removed: 0 };
  /** New bindings (learn: from Set-Cookie or an unknown id; cookie: cookies inserted). */
  learned = 0;
  /** Bindings removed because the backend deleted its session cookie. */
  unbound = 0;
}

/** Who waits for a request's session lookup (the proxy's attempt loop). */
export interface StickyOwner {
  /** The store answered a lookup that `begin` left pending (StickyState.pending is false again). */
  stickyResolved(): void;
}

/**
 * The sticky state of one request, upgrade or TCP session: what its session cookie says, where
 * it is bound and what became of the binding. One object per request whose upstream has
 * `sticky`, carried by the proxy's attempt loop; the Affinity reads and writes it.
 */
export class StickyState implements PickRequest, LookupWaiter {
  /** The valid session id the request carries (learn, hash), its masked client address (source), or null. */
  id: string | null = null;
  /** Server address the session is bound to (learn: from the store; cookie: from the cookie), or null. */
  bound: string | null = null;
  /** Why the bound server was not used (set by choose), or null. */
  reason: RebindReason | null = null;
  /** cookie mode: the cookie should be re-issued (old, or absent/invalid). */
  refresh = false;
  /** learn: a store lookup is in flight. */
  pending = false;
  /**
   * learn with a shared store: the store writes of the bindings this response announces (set by
   * onResponse, never rejects). The response must not reach the client before it settles: the
   * client's next request may reach another worker or instance, whose lookup must find them.
   */
  write: Promise<void> | null = null;
  /** For the access log: `bound`, `learned`, `rebound:<reason>` or `none`. */
  outcome = 'none';

  constructor(
    readonly req: IncomingMessage,
    readonly remoteAddress: string,
    private readonly affinity: Affinity,
    private readonly owner: StickyOwner,
  ) {}

  /** LookupWaiter: the store answered. */
  onLookup(value: string | null, result: CacheLookupResult): void {
    this.affinity.resolved(this, value, result);
    this.owner.stickyResolved();
  }
}

/** The bindings behind a learn-mode upstream: memory store (synchronous) or local cache + memcached. */
export type BindingSource =
  | { kind: 'memory'; store: MemoryStore }
  | { kind: 'cached'; cache: LocalCache };

/** A template for ConsistentHash that evaluates to the request's session id. */
const SESSION_ID_TEMPLATE: CompiledTemplate = {
  source: '$sticky_session_id',
  variables: [],
  evaluate: (src: VariableSource) => (src as unknown as StickyState).id ?? '',
};

export class Affinity {
  readonly name: string;
  readonly mode: StickyConfig['mode'];
  readonly cookie: string;
  readonly ttlMs: number;
  private readonly rules: SessionIdRules;
  private readonly peers = new Map<string, Peer>();
  // cookie mode
  private readonly signer: CookieSigner | null = null;
  private readonly sidToPeer = new Map<string, Peer>();
  private readonly peerToSid = new Map<Peer, string>();
  // hash mode
  private readonly ring: ConsistentHash | null = null;
  // source mode
  private readonly mask: StickyConfig['mask'];

  constructor(
    readonly upstream: Upstream,
    config: StickyConfig,
    private readonly source: BindingSource | null,
    readonly stats: AffinityStats,
  ) {
    this.name = upstream.name;
    this.mode = config.mode;
    this.cookie = config.cookie;
    this.ttlMs = config.ttlMs;
    this.rules = config.idRules;
    for (const p of upstream.all()) this.peers.set(p.address, p);
    if (this.mode === 'cookie') {
      this.signer = new CookieSigner(config.cookieKey, this.name);
      for (const p of upstream.all()) {
        const sid = this.signer.serverId(p.address);
        this.sidToPeer.set(sid, p);
        this.peerToSid.set(p, sid);
      }
    } else if (this.mode === 'hash' || this.mode === 'source') {
      // source: where a client whose server is gone moves (see `replacement`).
      this.ring = new ConsistentHash(upstream.primary, SESSION_ID_TEMPLATE);
    }
    this.mask = config.mask;
    if ((this.mode === 'learn' || this.mode === 'source') && source === null) throw new Error(`sticky ${this.mode} needs a binding source`);
  }

  private count(result: StickyLookupResult): void {
    this.stats.lookups[result]++;
  }

  private reject(reason: RejectedCookie): void {
    this.stats.rejectedCookies[reason]++;
    this.count('invalid_id');
  }

  private countRebind(reason: RebindReason): void {
    this.stats.rebinds[reason]++;
  }

  /**
   * Reads the session cookie and starts the lookup. For learn mode with memcached this
   * may leave `r.pending` true: the cache calls `r.onLookup` later (within `timeout`),
   * which must then call `resolved`.
   */
  begin(r: StickyState, headers: string[] | null, now: number): void {
    if (this.mode === 'source') {
      // No request to read (a stream has none): the client address is the key.
      const id = sourceSessionId(r.remoteAddress, this.mask);
      if (id === null) {
        this.count('invalid_id');
        return;
      }
      r.id = id;
      this.lookUp(r, id, now);
      return;
    }
    const cookieHeader = r.req.headers.cookie;
    if (this.mode === 'cookie') {
      const value = findCookie(cookieHeader, this.cookie);
      r.refresh = true;
      if (value === null) return;
      if (headers !== null) stripCookie(headers, this.cookie);
      if (value === false) {
        this.reject('forged');
        return;
      }
      const check = this.signer!.check(value, now, this.ttlMs);
      if (!check.ok) {
        this.reject(check.reason);
        return;
      }
      const peer = this.sidToPeer.get(check.sid);
      if (peer === undefined) {
        this.reject('stale'); // signed by us, for a server that is no longer configured
        return;
      }
      this.count('local_hit');
      r.bound = peer.address;
      r.refresh = now - check.issuedAt > this.ttlMs / 4;
      return;
    }
    const id = sessionIdFromCookieHeader(cookieHeader, this.cookie, this.rules);
    if (id === null) return;
    if (id === false) {
      this.count('invalid_id');
      return;
    }
    r.id = id;
    if (this.mode === 'hash') {
      this.count('local_hit');
      return;
    }
    this.lookUp(r, id, now);
  }

  /** learn, source: the binding of `id`, from the memory store or the local cache (may leave `r.pending`). */
  private lookUp(r: StickyState, id: string, now: number): void {
    const source = this.source!;
    if (source.kind === 'memory') {
      const bound = source.store.getSync(localKey(this.name, id), now);
      this.count(bound === null ? 'miss' : 'local_hit');
      r.bound = bound;
      return;
    }
    const bound = source.cache.lookup(localKey(this.name, id), this.ttlMs, now, r);
    if (bound === undefined) {
      r.pending = true;
      return;
    }
    this.count(bound === null ? 'miss' : 'local_hit');
    r.bound = bound;
  }

  /** Completes a lookup that went to the store (called from the request's onLookup). */
  resolved(r: StickyState, value: string | null, result: CacheLookupResult): void {
    r.pending = false;
    this.count(result);
    r.bound = value;
  }

  /**
   * The first pick: the session's server, already acquired (`upstream.acquire`), or null to
   * let the balancer choose (then `r.reason` says why, when the session had a server).
   */
  choose(r: StickyState, now: number): Peer | null {
    if (this.mode === 'hash') {
      if (r.id === null) return null;
      const ring = this.ring!;
      const target = ring.empty ? undefined : this.peers.get(ring.serverFor(r.id));
      if (target !== undefined) {
        r.bound = target.address;
        const why = target.unavailable(now, Taking.Bound);
        if (why === null) {
          this.upstream.acquire(target, now);
          return target;
        }
        r.reason = why;
      }
      // The next live server on the ring: every instance moves the session to the same one.
      const next = ring.pick(this.upstream.primary, null, r, now);
      if (next !== null) this.upstream.acquire(next, now);
      return next;
    }
    const bound = r.bound;
    if (bound === null) return null;
    const peer = this.peers.get(bound);
    if (peer === undefined) {
      r.reason = 'removed';
      return null;
    }
    const why = this.mode === 'source' ? peer.unavailable(now, Taking.New) : peer.unavailable(now, Taking.Bound);
    if (why === null) {
      this.upstream.acquire(peer, now);
      return peer;
    }
    r.reason = why;
    return null;
  }

  /**
   * source mode: the server for a bound client whose server cannot take it (unavailable, or its
   * connection failed: `tried`), already acquired: the next available server on the consistent
   * hash ring of the client's key, not the policy's pick. Every instance and worker then moves
   * the client to the same server on its own, whether or not it has seen the failure yet (one
   * that has not tries the old server, fails, and lands where the others did), so a client does
   * not flip between two new homes chosen by two round robins. null: no binding to replace, not
   * source mode, or no primary server left (the caller asks the balancer, backups included).
   */
  replacement(r: StickyState, tried: ReadonlySet<Peer> | null, now: number): Peer | null {
    if (this.mode !== 'source' || r.bound === null || r.id === null) return null;
    const next = this.ring!.pick(this.upstream.primary, tried, r, now);
    if (next !== null) this.upstream.acquire(next, now);
    return next;
  }

  /**
   * The upstream answered (from `peer`): learn bindings from its Set-Cookie headers,
   * rebind a session that moved, insert our cookie (cookie mode), and set `r.outcome`.
   * `clientHeaders` is the flat header list about to be sent to the client; `secure`: the client
   * came over TLS (our cookie then gets `Secure`).
   */
  onResponse(r: StickyState, peer: Peer, upstreamHeaders: readonly string[], clientHeaders: string[], now: number, secure = false): void {
    const bound = r.bound;
    const moved = bound !== null && bound !== peer.address;
    if (this.mode === 'cookie') {
      if (moved || r.refresh) {
        const sid = this.peerToSid.get(peer);
        if (sid !== undefined) {
          clientHeaders.push('Set-Cookie', ownCookieHeader(this.cookie, this.signer!.value(sid, now), secure));
          noCache(clientHeaders);
        }
      }
      if (moved) this.rebound(r, r.reason ?? 'failed');
      else if (bound !== null) r.outcome = 'bound';
      else if (r.refresh) {
        this.stats.learned++;
        r.outcome = 'learned';
      }
      return;
    }
    if (this.mode === 'hash') {
      if (moved) this.rebound(r, r.reason ?? 'failed');
      else if (bound !== null) r.outcome = 'bound';
      return;
    }
    // learn, source (no Set-Cookie is read: the address is the key)
    const id = r.id;
    let learned = false;
    let requestIdHandled = false;
    let newIdSet = false;
    const headerCount = this.mode === 'learn' ? upstreamHeaders.length : 0;
    for (let i = 0; i < headerCount; i += 2) {
      const name = upstreamHeaders[i]!;
      if (!equalsLower(name, 'set-cookie')) continue;
      const effect = parseSetCookie(upstreamHeaders[i + 1]!, this.cookie, this.rules, now);
      if (effect === null) continue;
      if (effect.kind === 'invalid') {
        this.count('invalid_id');
      } else if (effect.kind === 'delete') {
        const gone = effect.id === '' ? id : effect.id;
        if (gone !== null) {
          this.unbind(gone);
          this.stats.unbound++;
          if (gone === id) requestIdHandled = true;
        }
      } else if (effect.id === id) {
        // The backend refreshed the request's own cookie: same as the request's own binding below.
      } else {
        this.hold(r, this.bind(effect.id, peer, now));
        learned = true;
        newIdSet = true;
      }
    }
    if (id !== null && !requestIdHandled) {
      if (bound === null) {
        // An id nobody bound yet (expired binding, or the store lost it): bind it to the server
        // that answered — unless that server just replaced it with a new id (PHP strict mode).
        if (!newIdSet) {
          this.hold(r, this.bind(id, peer, now));
          learned = true;
        }
      } else if (moved) {
        this.hold(r, this.bind(id, peer, now));
        this.rebound(r, r.reason ?? 'failed');
        return;
      }
    }
    if (learned) {
      this.stats.learned++;
      r.outcome = 'learned';
    } else if (bound !== null && !moved) {
      r.outcome = 'bound';
    }
  }

  /**
   * A stream's connection to `peer` is established (source mode): binds a client nobody bound
   * yet, rebinds one that moved, sets `r.outcome`; the write to a shared store is in `r.write`
   * (the session passes no byte before it settles, as a learning HTTP response waits for it).
   */
  onConnected(r: StickyState, peer: Peer, now: number): void {
    this.onResponse(r, peer, NO_HEADERS, [], now);
  }

  private rebound(r: StickyState, reason: RebindReason): void {
    this.countRebind(reason);
    r.outcome = `rebound:${reason}`;
  }

  /** The response announcing a binding waits for its store write (see StickyState.write). */
  private hold(r: StickyState, write: Promise<void> | null): void {
    if (write === null) return;
    r.write = r.write === null ? write : Promise.all([r.write, write]).then(nothing);
  }

  /**
   * Binds a session id to a server (learn mode). Returns the shared store's write (settles when
   * the store has it, failed or timed out: never rejects), or null when the binding is already
   * where every lookup reads it (memory store).
   */
  bind(id: string, peer: Peer, now: number): Promise<void> | null {
    const key = localKey(this.name, id);
    const source = this.source!;
    if (source.kind === 'memory') {
      source.store.setSync(key, peer.address, this.ttlMs, now);
      return null;
    }
    return source.cache.bind(key, peer.address, this.ttlMs, now);
  }

  unbind(id: string): void {
    const key = localKey(this.name, id);
    const source = this.source!;
    if (source.kind === 'memory') source.store.deleteSync(key);
    else source.cache.unbind(key);
  }
}

const NO_HEADERS: readonly string[] = [];

function nothing(): void {
  // Promise.all's values are not needed, only that every write settled.
}

/** HAProxy `nocache`: a response that sets the affinity cookie must not be stored by shared caches. */
function noCache(headers: string[]): void {
  for (let i = 0; i < headers.length; i += 2) {
    if (!equalsLower(headers[i]!, 'cache-control')) continue;
    const v = headers[i + 1]!.toLowerCase();
    if (v.includes('private') || v.includes('no-store') || v.includes('no-cache')) return;
    const kept = v.split(',').map((s) => s.trim()).filter((s) => s !== '' && s !== 'public' && !s.startsWith('s-maxage'));
    headers[i + 1] = ['private', ...kept].join(', ');
    return;
  }
  headers.push('Cache-Control', 'private');
}
