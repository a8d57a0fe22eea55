/**
 * Every relative link in every Markdown file of the repository resolves: `[text](path)` to a file
 * or folder that exists inside the repository, and `[text](path#anchor)` / `[text](#anchor)` into
 * a Markdown file to one of its headings (GitHub's anchors). Links with a scheme (https:, mailto:,
 * ...) are not checked. Code blocks and code spans are not links.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Not the repository's own documents: dependencies, build output, git's files. */
const SKIP_DIRS = new Set(['node_modules', 'dist', '.git', 'coverage', '.vitest']);

function markdownFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name)) out.push(...markdownFiles(join(dir, entry.name)));
    } else if (entry.isFile() && entry.name.toLowerCase().endsWith('.md')) {
      out.push(join(dir, entry.name));
    }
  }
  return out;
}

/** The text without fenced code blocks (``` or ~~~), line count kept so that line numbers stay right. */
function withoutFences(text: string): string {
  let fence: string | null = null;
  return text.split('\n').map((line) => {
    const m = /^\s{0,3}(`{3,}|~{3,})/.exec(line);
    if (fence === null) {
      if (m) fence = m[1]!;
      return m ? '' : line;
    }
    if (m && m[1]![0] === fence[0] && m[1]!.length >= fence.length && line.trim() === m[1]) fence = null;
    return '';
  }).join('\n');
}

/** Code spans (which may run over a line break) replaced by spaces, keeping line breaks. */
function withoutCodeSpans(text: string): string {
  return text.replace(/(`+)(?!`)[\s\S]*?(?<!`)\1(?!`)/g, (span) => span.replace(/[^\n]/g, ' '));
}

/** GitHub's heading anchor (github-slugger): lower case, punctuation dropped except `-` and `_`, spaces to `-`. */
function slug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // [text](url) -> text
    .replace(/<[^>]+>/g, '') // inline HTML
    .replace(/(\*\*|__)(.*?)\1/g, '$2') // bold markers
    .trim()
    .toLowerCase();
  return text.replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '').replace(/ /g, '-');
}

/** The anchors a Markdown file offers: its headings (duplicates numbered as GitHub does) and explicit `<a name|id>`. */
function anchorsOf(text: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const line of withoutFences(text).split('\n')) {
    const h = /^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$/.exec(line);
    if (h) {
      const base = slug(h[1]!);
      const n = seen.get(base) ?? 0;
      seen.set(base, n + 1);
      anchors.add(n === 0 ? base : `${base}-${n}`);
    }
    for (const a of line.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) anchors.add(a[1]!);
  }
  return anchors;
}

interface Link {
  line: number;
  target: string;
}

/** Inline links and images `[text](target "title")`, and reference definitions `[id]: target`. */
function linksOf(text: string): Link[] {
  const clean = withoutCodeSpans(withoutFences(text));
  const links: Link[] = [];
  const lineOf = (index: number): number => clean.slice(0, index).split('\n').length;
  for (const m of clean.matchAll(/\]\(\s*(<[^>\n]*>|[^)\s]+)(?:\s+(?:"[^"\n]*"|'[^'\n]*'))?\s*\)/g)) {
    links.push({ line: lineOf(m.index!), target: m[1]!.replace(/^<|>$/g, '') });
  }
  for (const m of clean.matchAll(/^ {0,3}\[[^\]\n]+\]:\s*(<[^>\n]*>|\S+)/gm)) {
    links.push({ line: lineOf(m.index!), target: m[1]!.replace(/^<|>$/g, '') });
  }
  return links;
}

/** What is wrong with one link of `file`, or null when it resolves. */
function problem(file: string, target: string): string | null {
  if (/^[a-z][a-z0-9+.-]*:/i.test(target)) return null; // https:, mailto:, ...: not a file of ours
  const hash = target.indexOf('#');
  const pathPart = hash === -1 ? target : target.slice(0, hash);
  const anchor = hash === -1 ? null : decodeURIComponent(target.slice(hash + 1));
  const path = pathPart === '' ? file : resolve(dirname(file), decodeURIComponent(pathPart.split('?')[0]!));
  const rel = relative(ROOT, path);
  if (rel.startsWith('..') || rel.startsWith(sep)) return 'points outside the repository';
  if (!existsSync(path)) return 'no such file or folder';
  if (anchor === null || anchor === '') return null;
  if (!path.toLowerCase().endsWith('.md') || !statSync(path).isFile()) return null; // anchors into code: not checked
  if (!anchorsOf(readFileSync(path, 'utf8')).has(anchor)) return `no heading with anchor #${anchor}`;
  return null;
}

const files = markdownFiles(ROOT).sort();
const name = (f: string): string => relative(ROOT, f).split(sep).join('/');

describe('Markdown links', () => {
  it('finds the documents', () => {
    const names = files.map(name);
    for (const f of ['README.md', 'SECURITY.md', 'bench/README.md', 'docs/configuration.md', 'docs/architecture.md', 'examples/README.md']) {
      expect(names).toContain(f);
    }
    const total = files.reduce((n, f) => n + linksOf(readFileSync(f, 'utf8')).length, 0);
    expect(total).toBeGreaterThan(50);
  });

  it('computes GitHub anchors', () => {
    expect(slug('`upstreams.NAME.servers[]`')).toBe('upstreamsnameservers');
    expect(slug('`servers[]` (virtual servers)')).toBe('servers-virtual-servers');
    expect(slug('Goal 5: RSS with 1M sessions seen — `bench/sessions-rss.mjs`')).toBe('goal-5-rss-with-1m-sessions-seen--benchsessions-rssmjs');
    expect([...anchorsOf('# A\n## B\n```\n# not a heading\n```\n## B\n')]).toEqual(['a', 'b', 'b-1']);
    expect(linksOf('[a](x.md) `[b](y.md)` [c](<z.md> "t")\n```\n[d](w.md)\n```\n[e]: v.md').map((l) => l.target))
      .toEqual(['x.md', 'z.md', 'v.md']);
  });

  it('reports what does not resolve', () => {
    const readme = join(ROOT, 'README.md');
    expect(problem(readme, 'docs/configuration.md#upstreamsnameservers')).toBeNull();
    expect(problem(readme, 'docs/no-such-page.md')).toBe('no such file or folder');
    expect(problem(readme, 'docs/configuration.md#no-such-heading')).toBe('no heading with anchor #no-such-heading');
    expect(problem(readme, '#no-such-heading')).toBe('no heading with anchor #no-such-heading');
    expect(problem(readme, '../outside.md')).toBe('points outside the repository');
    expect(problem(readme, 'https://example.com/x.md#y')).toBeNull();
  });

  it.each(files.map(name))('%s: every relative link resolves', (file) => {
    const path = join(ROOT, file);
    const broken = linksOf(readFileSync(path, 'utf8'))
      .map((l) => ({ ...l, why: problem(path, l.target) }))
      .filter((l) => l.why !== null)
      .map((l) => `${file}:${l.line}: (${l.target}) ${l.why}`);
    expect(broken).toEqual([]);
  });
});
