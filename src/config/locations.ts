/**
 * What a location (and a server) adds beyond proxyPass: nginx's location modifiers ("=", "^~",
 * "~", "~*") with the regular expressions compiled once at load, `return`, and the proxy
 * settings a location or server may set over its upstream's (`timeouts`, `nextUpstream`), the
 * nearest level winning key by key. Used by load.ts (normalising) and cross-check.ts (duplicates).
 */
import { compileTemplate, type TemplateContext } from '../nginx-language/variables.js';
import { parseDuration } from '../nginx-language/units.js';
import type { LocationMatch, NextUpstreamCondition, ProxyTimeouts, ReturnConfig, UpstreamConfig } from './model.js';
import type { RawReturn, RawUpstream } from './schema.js';

type Add = (at: PropertyKey[], message: string) => void;

/** The location fields this module reads (raw, possibly of an invalid file). */
interface RawMatch {
  path?: unknown;
  match?: unknown;
  exact?: unknown;
}

/** The modifier of a location: `match`, else "=" for `"exact": true`, else a plain prefix. */
export function locationMatch(loc: RawMatch): LocationMatch {
  if (loc.match === '=' || loc.match === '^~' || loc.match === '~' || loc.match === '~*') return loc.match;
  return loc.exact === true ? '=' : '';
}

/** The key two locations of a server may not share (nginx "duplicate location"): "^~" and a plain prefix clash. */
export function locationKey(loc: RawMatch): string {
  const m = locationMatch(loc);
  return `${m === '^~' ? '' : m}${String(loc.path)}`;
}

export const REDIRECT_CODES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

/**
 * Checks a location's `path` for its modifier and compiles a regular expression ("~", "~*"),
 * reporting problems at `at` (the location's JSON path). Returns the regex, or null.
 */
export function compileLocationMatch(loc: RawMatch & { path: string }, at: PropertyKey[], add: Add): RegExp | null {
  const match = locationMatch(loc);
  if (loc.exact === true && loc.match !== undefined && loc.match !== '=') {
    add([...at, 'exact'], `conflicts with "match": "${String(loc.match)}" (write one of them)`);
  }
  if (match !== '~' && match !== '~*') return null; // the schema checked the path
  let regex: RegExp;
  try {
    regex = new RegExp(loc.path, match === '~*' ? 'i' : '');
  } catch (err) {
    add([...at, 'path'], `is not a valid regular expression: ${(err as Error).message}`);
    return null;
  }
  const risky = backtrackingRisk(loc.path);
  if (risky !== null) add([...at, 'path'], risky);
  return regex;
}

/**
 * A pattern that can backtrack catastrophically: a repeated group that contains a repetition
 * itself ("(a+)+", "(\w*x?)*", star height 2, the rule of the safe-regex checkers). A heuristic:
 * it finds the classic exponential forms, not every polynomial one. The input is bounded anyway:
 * the normalised path of a request line that fits largeClientHeaderBuffers.
 */
export function backtrackingRisk(source: string): string | null {
  // For each open group: whether it holds an unbounded repetition (*, +, {n,}).
  const stack: boolean[] = [];
  let afterGroup = false;
  let groupRepeats = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (c === ')') {
      groupRepeats = stack.pop() ?? false;
      if (groupRepeats && stack.length > 0) stack[stack.length - 1] = true;
      afterGroup = true;
      continue;
    }
    if (c === '*' || c === '+' || (c === '{' && /^\{\d+,\}/.test(source.slice(i, i + 12)))) {
      if (afterGroup && groupRepeats) {
        return 'has a repeated group that itself repeats (such as "(a+)+"), which can take exponential time on some paths: rewrite it without the nested repetition';
      }
      if (stack.length > 0) stack[stack.length - 1] = true;
    } else if (c === '\\') {
      i++;
    } else if (c === '[') {
      // A character class: skipped to its end (escapes inside included).
      for (i++; i < source.length && source[i] !== ']'; i++) if (source[i] === '\\') i++;
    } else if (c === '(') {
      stack.push(false);
    }
    afterGroup = false;
  }
  return null;
}

/** Compiles a `return` of a server or location (`serverName`: its $server_name); null with problems reported. */
export function normaliseReturn(raw: RawReturn, context: TemplateContext, at: PropertyKey[], add: Add): ReturnConfig | null {
  const code = raw.code;
  let ok = true;
  const compile = (text: string | undefined, key: 'url' | 'text') => {
    if (text === undefined) return null;
    const t = compileTemplate(text, context);
    if (typeof t === 'string') {
      add([...at, key], t);
      ok = false;
      return null;
    }
    return t;
  };
  if (REDIRECT_CODES.has(code)) {
    if (raw.url === undefined) {
      add([...at, 'url'], `is required with code ${code} (the redirect target)`);
      ok = false;
    }
    if (raw.text !== undefined) {
      add([...at, 'text'], `does not go with code ${code}: a redirect has a "url"`);
      ok = false;
    }
  } else {
    if (raw.url !== undefined) {
      add([...at, 'url'], `goes only with a redirect code (301, 302, 303, 307, 308); use "text" for a body`);
      ok = false;
    }
    if (code === 444 && raw.text !== undefined) {
      add([...at, 'text'], '444 closes the connection without a response: no "text"');
      ok = false;
    }
  }
  const url = compile(raw.url, 'url');
  const text = compile(raw.text, 'text');
  return ok ? { code, url, text } : null;
}

type RawTiming = Pick<RawUpstream, 'timeouts' | 'nextUpstream'>;

/** `timeouts` of the nearest level that sets each key: location, then server, then the upstream's. */
export function resolveTimeouts(location: RawTiming, server: RawTiming, upstream: ProxyTimeouts): ProxyTimeouts {
  const pick = (key: 'connect' | 'send' | 'read', inherited: number): number => {
    const text = location.timeouts?.[key] ?? server.timeouts?.[key];
    return text === undefined ? inherited : parseDuration(text);
  };
  return { connectMs: pick('connect', upstream.connectMs), sendMs: pick('send', upstream.sendMs), readMs: pick('read', upstream.readMs) };
}

/** `nextUpstream` of the nearest level that sets each key (the upstream's object itself when neither does). */
export function resolveNextUpstream(
  location: RawTiming, server: RawTiming, upstream: UpstreamConfig['nextUpstream'], at: PropertyKey[], add: Add,
): UpstreamConfig['nextUpstream'] {
  const on = location.nextUpstream?.on ?? server.nextUpstream?.on;
  const tries = location.nextUpstream?.tries ?? server.nextUpstream?.tries;
  const timeout = location.nextUpstream?.timeout ?? server.nextUpstream?.timeout;
  if (on === undefined && tries === undefined && timeout === undefined) return upstream;
  if (on !== undefined && on.includes('off') && on.length > 1) add([...at, 'nextUpstream', 'on'], '"off" cannot be combined with other conditions');
  return {
    on: on === undefined ? upstream.on : new Set(on.filter((c): c is NextUpstreamCondition => c !== 'off')),
    tries: tries ?? upstream.tries,
    timeoutMs: timeout === undefined ? upstream.timeoutMs : parseDuration(timeout),
  };
}
