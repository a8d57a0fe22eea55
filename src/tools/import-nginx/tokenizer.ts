/**
 * nginx's configuration syntax: text -> tokens -> a tree of directives. A real tokenizer/parser
 * (what `ngx_conf_read_token` accepts: directives `name arg ... ;`, blocks `name arg ... { ... }`,
 * single and double quoted strings, backslash escapes, `${var}` inside words, `#` comments).
 * Text that is not nginx syntax is a NginxSyntaxError with its file and line.
 */

export interface NginxDirective {
  name: string;
  args: string[];
  /** 1-based line where the directive's name starts. */
  line: number;
  /** The block's contents for `name ... { }`; null for `name ... ;`. */
  block: NginxDirective[] | null;
}

export class NginxSyntaxError extends Error {
  constructor(readonly file: string, readonly line: number, readonly detail: string) {
    super(`${file}:${line}: ${detail}`);
    this.name = 'NginxSyntaxError';
  }
}

interface Token {
  kind: 'word' | ';' | '{' | '}' | 'eof';
  text: string;
  line: number;
}

function isSpace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\r' || ch === '\n';
}

/**
 * nginx's escape rules, applied to every word: `\"`, `\'` and `\\` lose the backslash, `\t`,
 * `\r`, `\n` become the control character, any other backslash is kept as written.
 */
function unescape(raw: string): string {
  if (raw.indexOf('\\') === -1) return raw;
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i]!;
    if (ch === '\\' && i + 1 < raw.length) {
      const next = raw[i + 1]!;
      if (next === '"' || next === '\'' || next === '\\') { out += next; i++; continue; }
      if (next === 't') { out += '\t'; i++; continue; }
      if (next === 'r') { out += '\r'; i++; continue; }
      if (next === 'n') { out += '\n'; i++; continue; }
    }
    out += ch;
  }
  return out;
}

/** Splits nginx configuration text into words and the three punctuation tokens. */
export function tokenize(text: string, file: string): Token[] {
  const tokens: Token[] = [];
  let line = 1;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const ch = text[i]!;
    if (ch === '\n') { line++; i++; continue; }
    if (isSpace(ch)) { i++; continue; }
    if (ch === '#') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    if (ch === ';' || ch === '{' || ch === '}') {
      tokens.push({ kind: ch, text: ch, line });
      i++;
      continue;
    }
    const startLine = line;
    if (ch === '"' || ch === '\'') {
      const quote = ch;
      i++;
      let raw = '';
      for (;;) {
        if (i >= n) throw new NginxSyntaxError(file, startLine, `unterminated ${quote === '"' ? 'double' : 'single'}-quoted string (unexpected end of file)`);
        const c = text[i]!;
        if (c === '\\' && i + 1 < n) {
          raw += c + text[i + 1]!;
          if (text[i + 1] === '\n') line++;
          i += 2;
          continue;
        }
        if (c === quote) { i++; break; }
        if (c === '\n') line++;
        raw += c;
        i++;
      }
      // nginx wants a separator right after a closing quote.
      if (i < n) {
        const after = text[i]!;
        if (!isSpace(after) && after !== ';' && after !== '{' && after !== ')') {
          throw new NginxSyntaxError(file, line, `unexpected "${after}" after a quoted string`);
        }
      }
      tokens.push({ kind: 'word', text: unescape(raw), line: startLine });
      continue;
    }
    // An unquoted word ends at whitespace, ";" or "{" (but "${" starts a variable name).
    let raw = '';
    let afterDollar = false;
    while (i < n) {
      const c = text[i]!;
      if (c === '{' && afterDollar) { raw += c; i++; afterDollar = false; continue; }
      if (isSpace(c) || c === ';' || c === '{') break;
      afterDollar = c === '$';
      if (c === '\\' && i + 1 < n) {
        if (text[i + 1] === '\n') line++;
        raw += c + text[i + 1]!;
        i += 2;
        continue;
      }
      raw += c;
      i++;
    }
    tokens.push({ kind: 'word', text: unescape(raw), line: startLine });
  }
  tokens.push({ kind: 'eof', text: '', line });
  return tokens;
}

/** Parses nginx configuration text into a tree of directives. Throws NginxSyntaxError with the line. */
export function parseNginx(text: string, file: string): NginxDirective[] {
  const tokens = tokenize(text, file);
  let pos = 0;

  const parseBlock = (depth: number, openLine: number): NginxDirective[] => {
    const out: NginxDirective[] = [];
    for (;;) {
      const t = tokens[pos]!;
      if (t.kind === 'eof') {
        if (depth > 0) throw new NginxSyntaxError(file, t.line, `unexpected end of file, expecting "}" (the block opened on line ${openLine} is not closed)`);
        return out;
      }
      if (t.kind === '}') {
        if (depth === 0) throw new NginxSyntaxError(file, t.line, 'unexpected "}"');
        pos++;
        return out;
      }
      if (t.kind === ';') throw new NginxSyntaxError(file, t.line, 'unexpected ";"');
      if (t.kind === '{') throw new NginxSyntaxError(file, t.line, 'unexpected "{" (a block needs a directive name)');
      const name = t.text;
      const line = t.line;
      pos++;
      const args: string[] = [];
      for (;;) {
        const a = tokens[pos]!;
        if (a.kind === 'word') { args.push(a.text); pos++; continue; }
        if (a.kind === ';') {
          pos++;
          out.push({ name, args, line, block: null });
          break;
        }
        if (a.kind === '{') {
          pos++;
          const block = parseBlock(depth + 1, a.line);
          out.push({ name, args, line, block });
          break;
        }
        if (a.kind === '}') throw new NginxSyntaxError(file, a.line, `unexpected "}" (directive "${name}" on line ${line} is not terminated by ";")`);
        throw new NginxSyntaxError(file, a.line, `unexpected end of file, expecting ";" or "}" (directive "${name}" on line ${line})`);
      }
    }
  };

  return parseBlock(0, 0);
}
