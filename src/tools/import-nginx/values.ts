/** nginx directive values as sessionlb writes them: numbers, times, sizes, `host:port` targets. */
import { parseHostPort, formatHostPort } from '../../nginx-language/address.js';
import { parseDuration, parseSize } from '../../nginx-language/units.js';

export function isInt(text: string | undefined): text is string {
  return text !== undefined && /^\d+$/.test(text);
}

/** nginx allows spaces inside a time value ("1h 30m"); sessionlb's strings do not. */
export function nginxDuration(text: string): string | null {
  const compact = text.replace(/\s+/g, '');
  return Number.isNaN(parseDuration(compact)) ? null : compact;
}

export function nginxSize(text: string): string | null {
  return Number.isNaN(parseSize(text)) ? null : text;
}

/** Canonical text of a `host:port` target for comparisons (nginx default port: 80, 443 for https). */
export function addressKey(target: string, defaultPort = 80): string | null {
  const hp = parseHostPort(target, defaultPort);
  return typeof hp === 'string' ? null : formatHostPort(hp.host, hp.port);
}
