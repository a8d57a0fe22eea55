/**
 * The access settings of a location (nginx ngx_http_access_module and ngx_http_auth_basic_module)
 * resolved across the three levels, and the user files read: each of `access`, `authBasic` and
 * `authBasicUserFile` comes from the nearest level that sets it (a level that sets it replaces
 * its parent's, as nginx).
 */
import { resolve as resolvePath } from 'node:path';
import { compileIpRule, type IpRule } from '../net/ip-rules.js';
import { readHtpasswd, type HtpasswdFile } from './htpasswd.js';
import type { AuthBasicConfig, Config } from './model.js';
import type { RawAccess } from './schema.js';

export interface AccessLevel {
  raw: RawAccess;
  at: PropertyKey[];
}

type Report = (at: PropertyKey[], message: string) => void;

/** The nearest level (location last in `levels`) that sets `key`. */
function nearest<K extends keyof RawAccess>(levels: readonly AccessLevel[], key: K): { value: NonNullable<RawAccess[K]>; at: PropertyKey[] } | null {
  for (let i = levels.length - 1; i >= 0; i--) {
    const v = levels[i]!.raw[key];
    if (v !== undefined) return { value: v as NonNullable<RawAccess[K]>, at: [...levels[i]!.at, key] };
  }
  return null;
}

/** Compiled allow/deny rules of a location; null = none. Problems go to `report` (reported once per level by `seen`). */
export function resolveAccess(levels: readonly AccessLevel[], report: Report, seen: Set<string>): readonly IpRule[] | null {
  const found = nearest(levels, 'access');
  if (found === null || found.value.length === 0) return null;
  const rules: IpRule[] = [];
  const where = found.at.join('.');
  found.value.forEach((rule, k) => {
    const allow = 'allow' in rule;
    const text = allow ? rule.allow : rule.deny;
    const compiled = compileIpRule(allow, text);
    if (typeof compiled === 'string') {
      if (!seen.has(`${where}[${k}]`)) report([...found.at, k, allow ? 'allow' : 'deny'], compiled);
      seen.add(`${where}[${k}]`);
    } else {
      rules.push(compiled);
    }
  });
  return rules;
}

/**
 * A location's Basic authentication, its user file not read yet (`users` empty: readUserFiles
 * fills it); null when off. `authBasic` without a user file is an error (nginx would let every
 * request through: an open location that looks closed).
 */
export function resolveAuthBasic(levels: readonly AccessLevel[], dir: string, report: Report, seen: Set<string>): AuthBasicConfig | null {
  const realm = nearest(levels, 'authBasic');
  if (realm === null || realm.value === 'off') return null;
  const file = nearest(levels, 'authBasicUserFile');
  if (file === null) {
    const where = realm.at.join('.');
    if (!seen.has(where)) report(realm.at, 'needs "authBasicUserFile" (here or on an enclosing level): nginx would not ask for a password at all');
    seen.add(where);
    return null;
  }
  const path = resolvePath(dir, file.value);
  return { realm: realm.value, challenge: `Basic realm="${realm.value}"`, userFile: { file: path, users: new Map(), warnings: [] } };
}

/**
 * Reads every user file `config` names (each once) and puts it in its locations; problems name
 * the file (a reload with an unreadable one fails and keeps the config in use).
 */
export async function readUserFiles(config: Config, report: Report): Promise<void> {
  const files = new Map<string, Promise<{ parsed: HtpasswdFile | null; problems: string[] }>>();
  const reported = new Set<string>();
  for (const vs of config.servers) {
    for (const [j, loc] of vs.locations.entries()) {
      const auth = loc.authBasic;
      if (auth === null) continue;
      const path = auth.userFile.file;
      let read = files.get(path);
      if (read === undefined) files.set(path, read = readHtpasswd(path));
      const { parsed, problems } = await read;
      if (!reported.has(path)) {
        reported.add(path);
        for (const p of problems) report(['servers', vs.index, 'locations', j, 'authBasicUserFile'], p);
      }
      if (parsed !== null) auth.userFile = parsed;
    }
  }
}

/** The warnings of the user files of `config` (each file once): {PLAIN}, {SHA}. */
export function userFileWarnings(config: Config): string[] {
  const out = new Map<string, string[]>();
  for (const vs of config.servers) for (const loc of vs.locations) {
    if (loc.authBasic !== null) out.set(loc.authBasic.userFile.file, loc.authBasic.userFile.warnings);
  }
  return [...out.values()].flat();
}
