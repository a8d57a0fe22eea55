/**
 * nginx `include`: the included files' directives take the place of the include, as nginx reads
 * them (relative paths, masks, include loops; see IncludeExpander).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { NginxSyntaxError, parseNginx, type NginxDirective } from './tokenizer.js';
import { encodeLine, fileAndLine, type ImportDiagnostic } from './diagnostics.js';

/** nginx has no limit but loops; this is far deeper than any real configuration. */
const MAX_INCLUDE_DEPTH = 16;

/**
 * nginx `include FILE|MASK;`: the directives of the file(s) take the place of the include, in
 * whatever block it is in. A relative path is relative to the directory of the main file
 * (nginx's conf prefix when run with `-c`). A mask (`*`, `?`, `[...]`) may only be in the last
 * path component here; its matches are read in name order, and a dot file is matched only by a
 * mask that starts with a dot (glob(3), which nginx uses). A mask matching nothing (or naming a
 * directory that does not exist) is fine, as in nginx; a missing file, an unreadable one or an
 * include loop is a warning (the rest still converts: a config copied from another machine
 * often names files that are not here).
 */
export class IncludeExpander {
  /** Index = the file's number in LINE_BASE terms; 0 is the main file. Shown as given or relative to the main file's directory. */
  readonly files: string[];
  readonly warnings: ImportDiagnostic[] = [];
  readonly errors: ImportDiagnostic[] = [];
  private readonly baseDir: string;

  constructor(mainFile: string) {
    this.files = [mainFile];
    this.baseDir = dirname(resolve(mainFile));
  }

  /** `tree` with its includes (in any block) replaced by what they include. `stack`: absolute paths being read. */
  expand(tree: NginxDirective[], stack: string[]): NginxDirective[] {
    const out: NginxDirective[] = [];
    for (const d of tree) {
      if (d.name === 'include' && d.block === null) {
        out.push(...this.include(d, stack));
      } else {
        out.push(d.block === null ? d : { ...d, block: this.expand(d.block, stack) });
      }
    }
    return out;
  }

  private include(d: NginxDirective, stack: string[]): NginxDirective[] {
    const notFollowed = (why: string): NginxDirective[] => {
      this.warnings.push({ line: d.line, message: `"include ${d.args.join(' ')}" is not followed: ${why}; convert that file separately and merge its upstreams/servers` });
      return [];
    };
    if (d.args.length !== 1) return notFollowed('it needs exactly one file name or mask');
    const pattern = isAbsolute(d.args[0]!) ? d.args[0]! : join(this.baseDir, d.args[0]!);
    let paths: string[];
    if (/[*?[]/.test(pattern)) {
      if (/[*?[]/.test(dirname(pattern))) return notFollowed('masks are supported in the file name only, not in directories');
      let names: string[];
      try {
        names = readdirSync(dirname(pattern));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // No directory, no match: nginx's glob finds nothing and goes on.
        if (code === 'ENOENT' || code === 'ENOTDIR') return [];
        return notFollowed(`cannot read the directory (${code ?? (err as Error).message})`);
      }
      const mask = maskPattern(basename(pattern));
      paths = names.filter((n) => mask.test(n)).sort().map((n) => join(dirname(pattern), n));
    } else {
      paths = [pattern];
    }
    const out: NginxDirective[] = [];
    for (const path of paths) {
      if (stack.includes(path)) {
        out.push(...notFollowed(`${this.shown(path)} includes itself (through ${stack.slice(1).map((p) => this.shown(p)).join(' -> ') || 'the main file'})`));
        continue;
      }
      if (stack.length > MAX_INCLUDE_DEPTH) {
        out.push(...notFollowed(`includes are nested more than ${MAX_INCLUDE_DEPTH} deep`));
        continue;
      }
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // A mask's match that is a directory is skipped, as glob + nginx's open would fail on it anyway.
        if (code === 'EISDIR' && paths.length > 1) continue;
        out.push(...notFollowed(`cannot read ${this.shown(path)} (${code === 'ENOENT' ? 'no such file' : code ?? (err as Error).message})`));
        continue;
      }
      const index = this.files.length;
      this.files.push(this.shown(path));
      let tree: NginxDirective[];
      try {
        tree = parseNginx(text, this.shown(path));
      } catch (err) {
        if (!(err instanceof NginxSyntaxError)) throw err;
        this.errors.push({ line: encodeLine(index, err.line), message: `${err.detail} (included from ${fileAndLine(this.files, d.line)})` });
        continue;
      }
      out.push(...this.expand(renumber(tree, index), [...stack, path]));
    }
    return out;
  }

  /** A path as the user wrote it: relative to the main file's directory when inside it. */
  private shown(path: string): string {
    const r = relative(this.baseDir, path);
    return r.startsWith('..') || isAbsolute(r) ? path : join(dirname(this.files[0]!), r);
  }
}

/** glob(3)'s `*`, `?` and `[...]` for one file name; a leading dot must be matched literally. */
function maskPattern(mask: string): RegExp {
  let re = '';
  for (let i = 0; i < mask.length; i++) {
    const c = mask[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = mask.indexOf(']', i + 2);
      if (end < 0) { re += '\\['; continue; }
      let set = mask.slice(i + 1, end);
      if (set.startsWith('!')) set = `^${set.slice(1)}`;
      re += `[${set.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(mask.startsWith('.') ? `^${re}$` : `^(?!\\.)${re}$`);
}

/** A parsed file's lines moved into its LINE_BASE range. */
function renumber(tree: NginxDirective[], index: number): NginxDirective[] {
  return tree.map((d) => ({ ...d, line: encodeLine(index, d.line), block: d.block === null ? null : renumber(d.block, index) }));
}
