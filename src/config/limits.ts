/**
 * nginx limit_req / limit_conn in the config model: the zones of the top level (`limitReqZones`,
 * `limitConnZones`) and each location's limits, resolved across the top level, the server and
 * the location as nginx inherits them (a level that sets `limitReq` replaces its parent's list;
 * status, dry run and log level come from the nearest level that sets them).
 */
import { compileTemplate, type CompiledTemplate } from '../nginx-language/variables.js';
import { parseSize } from '../nginx-language/units.js';
import { MIN_ZONE_BYTES } from '../limits/zone-memory.js';
import type { RawConfig } from './schema.js';
import type { LIMIT_LOG_LEVELS } from './limits-schema.js';

const DEFAULT_ZONE_SIZE = '10m';
/** nginx `nodelay`: a delay threshold no excess reaches (NGX_MAX_INT_T_VALUE / 1000 there). */
export const NO_DELAY = Number.MAX_SAFE_INTEGER;

export type LimitLogLevel = (typeof LIMIT_LOG_LEVELS)[number];

export interface LimitReqZoneConfig {
  name: string;
  /** The key as written (a zone whose key, rate or size changes on reload starts empty). */
  keyText: string;
  /** nginx's rate: requests per second x 1000 (r/m: x 1000 / 60, truncated). */
  rate: number;
  rateText: string;
  sizeBytes: number;
  shared: boolean;
}

export interface LimitConnZoneConfig {
  name: string;
  keyText: string;
  sizeBytes: number;
}

export interface LimitReqRuleConfig {
  zone: string;
  /** The zone's key, compiled for this location's server ($server_name). */
  key: CompiledTemplate;
  /** nginx burst x 1000. */
  burst: number;
  /** nginx delay x 1000 (NO_DELAY for nodelay; 0 by default: every excess request waits). */
  delay: number;
}

export interface LimitConnRuleConfig {
  zone: string;
  key: CompiledTemplate;
  conn: number;
}

export interface LimitSettings<R> {
  rules: readonly R[];
  status: number;
  dryRun: boolean;
  logLevel: LimitLogLevel;
}

/** A location's limits; null members: none apply. */
export interface LocationLimits {
  req: LimitSettings<LimitReqRuleConfig> | null;
  conn: LimitSettings<LimitConnRuleConfig> | null;
}

type Report = (at: PropertyKey[], message: string) => void;
type RawLimitKeys = Pick<RawConfig, 'limitReq' | 'limitReqStatus' | 'limitReqDryRun' | 'limitReqLogLevel' | 'limitConn' | 'limitConnStatus' | 'limitConnDryRun' | 'limitConnLogLevel'>;
interface Level { raw: RawLimitKeys; at: PropertyKey[] }

/** nginx rate=: "10r/s" -> 10000, "30r/m" -> 500. */
export function parseRate(text: string): number {
  const n = Number(text.slice(0, -3));
  return text.endsWith('r/m') ? Math.trunc(n * 1000 / 60) : n * 1000;
}

function zoneSize(text: string | undefined, at: PropertyKey[], report: Report): number {
  const bytes = parseSize(text ?? DEFAULT_ZONE_SIZE);
  if (!(bytes >= MIN_ZONE_BYTES)) report(at, `is too small: a zone needs at least "32k" (nginx refuses a smaller one too)`);
  return bytes;
}

function keyProblem(text: string): string | null {
  const compiled = compileTemplate(text, { serverName: '' });
  return typeof compiled === 'string' ? compiled : null;
}

/** The top level's zones, checked (key, rate, size; `shared` needs memcached). */
export function resolveLimitZones(raw: RawConfig, report: Report): { req: Map<string, LimitReqZoneConfig>; conn: Map<string, LimitConnZoneConfig> } {
  const req = new Map<string, LimitReqZoneConfig>();
  const conn = new Map<string, LimitConnZoneConfig>();
  const memcached = raw.sessionStore?.type === 'memcached';
  for (const [name, z] of Object.entries(raw.limitReqZones ?? {})) {
    const at = ['limitReqZones', name];
    const bad = keyProblem(z.key);
    if (bad !== null) report([...at, 'key'], bad);
    if (z.shared === true && !memcached) {
      report([...at, 'shared'], 'needs a memcached sessionStore ({"type": "memcached", ...}): the shared count lives there');
    }
    req.set(name, { name, keyText: z.key, rate: parseRate(z.rate), rateText: z.rate, sizeBytes: zoneSize(z.size, [...at, 'size'], report), shared: z.shared === true });
  }
  for (const [name, z] of Object.entries(raw.limitConnZones ?? {})) {
    const at = ['limitConnZones', name];
    const bad = keyProblem(z.key);
    if (bad !== null) report([...at, 'key'], bad);
    conn.set(name, { name, keyText: z.key, sizeBytes: zoneSize(z.size, [...at, 'size'], report) });
  }
  return { req, conn };
}

function nearest<K extends keyof RawLimitKeys>(levels: readonly Level[], key: K): { value: NonNullable<RawLimitKeys[K]>; at: PropertyKey[] } | null {
  for (let i = levels.length - 1; i >= 0; i--) {
    const v = levels[i]!.raw[key];
    if (v !== undefined) return { value: v as NonNullable<RawLimitKeys[K]>, at: [...levels[i]!.at, key] };
  }
  return null;
}

function listOf<T>(value: T | readonly T[]): readonly T[] {
  return Array.isArray(value) ? value : [value as T];
}

/** The per-level keys of one kind of limit: limit_req's or limit_conn's. */
interface LimitKind<Raw extends { zone: string }, Zone, Rule> {
  list: 'limitReq' | 'limitConn';
  status: 'limitReqStatus' | 'limitConnStatus';
  dryRun: 'limitReqDryRun' | 'limitConnDryRun';
  logLevel: 'limitReqLogLevel' | 'limitConnLogLevel';
  zones: ReadonlyMap<string, Zone & { keyText: string }>;
  /** The rule for `raw` with its zone's compiled key; a string: the problem with it (at the rule). */
  rule(raw: Raw, key: CompiledTemplate): Rule | string;
}

/** One kind of limit of a location: the nearest level's list, checked, and the nearest settings. */
function resolveKind<Raw extends { zone: string }, Zone, Rule extends { zone: string }>(
  levels: readonly Level[], kind: LimitKind<Raw, Zone, Rule>, serverName: string, once: Report,
): LimitSettings<Rule> | null {
  const found = nearest(levels, kind.list);
  if (found === null) return null;
  const rules: Rule[] = [];
  listOf(found.value as Raw | readonly Raw[]).forEach((raw, k) => {
    const at = Array.isArray(found.value) ? [...found.at, k] : found.at;
    const zone = kind.zones.get(raw.zone);
    if (zone === undefined) {
      once([...at, 'zone'], `no ${kind.list}Zones entry named "${raw.zone}"`);
      return;
    }
    if (rules.some((x) => x.zone === raw.zone)) {
      once([...at, 'zone'], `zone "${raw.zone}" is used twice at this level (nginx: "${kind.list === 'limitReq' ? 'limit_req' : 'limit_conn'}" directive is duplicate)`);
      return;
    }
    const key = compileTemplate(zone.keyText, { serverName });
    if (typeof key === 'string') return; // reported with the zone
    const rule = kind.rule(raw, key);
    if (typeof rule === 'string') once(at, rule);
    else rules.push(rule);
  });
  if (rules.length === 0) return null;
  return {
    rules,
    status: nearest(levels, kind.status)?.value ?? 503,
    dryRun: nearest(levels, kind.dryRun)?.value ?? false,
    logLevel: nearest(levels, kind.logLevel)?.value ?? 'error',
  };
}

type RawReqRule = Extract<NonNullable<RawLimitKeys['limitReq']>, { zone: string }>;
type RawConnRule = Extract<NonNullable<RawLimitKeys['limitConn']>, { zone: string }>;

/**
 * A location's limits (`levels`: top level, server, location). Problems (unknown zone, a zone
 * twice, `nodelay` with `delay`) go to `report`, once per level (`seen`).
 */
export function resolveLocationLimits(
  levels: readonly Level[],
  zones: { req: ReadonlyMap<string, LimitReqZoneConfig>; conn: ReadonlyMap<string, LimitConnZoneConfig> },
  serverName: string,
  report: Report,
  seen: Set<string>,
): LocationLimits | null {
  const once = (at: PropertyKey[], message: string): void => {
    const where = at.join('.');
    if (!seen.has(where)) report(at, message);
    seen.add(where);
  };
  const req = resolveKind<RawReqRule, LimitReqZoneConfig, LimitReqRuleConfig>(levels, {
    list: 'limitReq', status: 'limitReqStatus', dryRun: 'limitReqDryRun', logLevel: 'limitReqLogLevel', zones: zones.req,
    rule: (r, key) => (r.nodelay === true && r.delay !== undefined ? '"nodelay" and "delay" do not go together: nodelay means no request waits'
      : { zone: r.zone, key, burst: (r.burst ?? 0) * 1000, delay: r.nodelay === true ? NO_DELAY : (r.delay ?? 0) * 1000 }),
  }, serverName, once);
  const conn = resolveKind<RawConnRule, LimitConnZoneConfig, LimitConnRuleConfig>(levels, {
    list: 'limitConn', status: 'limitConnStatus', dryRun: 'limitConnDryRun', logLevel: 'limitConnLogLevel', zones: zones.conn,
    rule: (r, key) => ({ zone: r.zone, key, conn: r.conn }),
  }, serverName, once);
  return req === null && conn === null ? null : { req, conn };
}
