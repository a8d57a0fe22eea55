/**
 * nginx's server name rules, generic over what a name selects: the exact name, then the longest
 * leading wildcard (`*.example.com`, or `.example.com`, which also matches `example.com`), then
 * the longest trailing wildcard (`www.example.*`), then the default server. The first value added
 * is the default unless one is added with `isDefault` (the last such wins, as before). Used for
 * `Host` in proxy/http/router.ts and for SNI in tls/contexts.ts.
 */

export class ServerNames<T> {
  private readonly exactNames = new Map<string, T>();
  /** ".example.com" or "*.example.com" as the suffix to match (".example.com"), longest first. */
  private readonly leading: { suffix: string; bare: string | null; value: T }[] = [];
  /** "www.example.*" as "www.example.", longest first. */
  private readonly trailing: { prefix: string; value: T }[] = [];
  private defaultValue: T | undefined;
  private hasDefault = false;

  /** Adds a server's names (as written in the config, lower case). An exact name already taken keeps its first server. */
  add(names: readonly string[], value: T, isDefault: boolean): void {
    // nginx: the first server of a listen address is its default unless another says `default_server`.
    if (!this.hasDefault || isDefault) {
      this.defaultValue = value;
      this.hasDefault = true;
    }
    for (const name of names) {
      if (name.startsWith('*.')) {
        this.leading.push({ suffix: name.slice(1), bare: null, value });
      } else if (name.startsWith('.')) {
        this.leading.push({ suffix: name, bare: name.slice(1), value });
      } else if (name.endsWith('.*')) {
        this.trailing.push({ prefix: name.slice(0, -1), value });
      } else if (!this.exactNames.has(name)) {
        this.exactNames.set(name, value);
      }
    }
    this.leading.sort((a, b) => b.suffix.length - a.suffix.length);
    this.trailing.sort((a, b) => b.prefix.length - a.prefix.length);
  }

  /** The default server's value; undefined only before the first `add`. */
  get default(): T | undefined {
    return this.defaultValue;
  }

  /** The value named by an already normalised name (see `normaliseHost`), without the default. */
  match(name: string): T | undefined {
    const exact = this.exactNames.get(name);
    if (exact !== undefined) return exact;
    for (const l of this.leading) {
      if (name.endsWith(l.suffix) || (l.bare !== null && name === l.bare)) return l.value;
    }
    for (const t of this.trailing) {
      if (name.startsWith(t.prefix)) return t.value;
    }
    return undefined;
  }

  /**
   * The value for a `Host` header or an SNI name as received (normalised here), else the
   * default server's. Undefined only when nothing was added.
   */
  lookup(hostOrSni: string | undefined): T | undefined {
    if (hostOrSni !== undefined && hostOrSni.length > 0) {
      const found = this.match(normaliseHost(hostOrSni));
      if (found !== undefined) return found;
    }
    return this.defaultValue;
  }
}

/** Host header (or SNI name) to a server name: lower case, no port, no trailing dot. */
export function normaliseHost(host: string): string {
  let end = host.length;
  if (host.charCodeAt(0) === 91 /* [ */) {
    const close = host.indexOf(']');
    end = close >= 0 ? close + 1 : end;
  } else {
    const colon = host.indexOf(':');
    if (colon >= 0) end = colon;
  }
  if (end > 0 && host.charCodeAt(end - 1) === 46 /* . */) end--;
  const name = host.slice(0, end);
  return name.toLowerCase();
}
