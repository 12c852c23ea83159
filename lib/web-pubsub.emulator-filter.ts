/**
 * The subset of the service's OData `filter` syntax the emulator understands:
 * `userId`/`connectionId` compared with `eq`/`ne` to a string or `null`, `'<group>' in groups`,
 * combined with `and`, `or`, `not` and parentheses. Anything else is a {@link FilterError}, which
 * the REST API answers with 400 rather than guessing.
 */
import type { FilterableConnection } from './web-pubsub.emulator-hubs.js';

export type ConnectionFilter = (connection: FilterableConnection) => boolean;

export class FilterError extends Error {
  override name = 'FilterError';
}

type Token =
  | { kind: 'string'; value: string }
  | { kind: 'word'; value: string }
  | { kind: '(' }
  | { kind: ')' };

function tokenize(filter: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < filter.length) {
    const char = filter[i]!;
    if (/\s/.test(char)) {
      i++;
    } else if (char === '(' || char === ')') {
      tokens.push({ kind: char });
      i++;
    } else if (char === "'") {
      // OData escapes a quote inside a string by doubling it.
      let value = '';
      i++;
      for (;;) {
        if (i >= filter.length) throw new FilterError('unterminated string literal');
        if (filter[i] === "'") {
          if (filter[i + 1] === "'") {
            value += "'";
            i += 2;
            continue;
          }
          i++;
          break;
        }
        value += filter[i];
        i++;
      }
      tokens.push({ kind: 'string', value });
    } else {
      const match = /^[A-Za-z_][A-Za-z0-9_]*/.exec(filter.slice(i));
      if (!match) throw new FilterError(`unexpected character "${char}" at position ${i}`);
      tokens.push({ kind: 'word', value: match[0] });
      i += match[0].length;
    }
  }
  return tokens;
}

type Operand = (connection: FilterableConnection) => string | null;

class Parser {
  private position = 0;

  constructor(private readonly tokens: Token[]) {}

  parse(): ConnectionFilter {
    const filter = this.or();
    const rest = this.tokens[this.position];
    if (rest) throw new FilterError(`unexpected ${describe(rest)}`);
    return filter;
  }

  private peekWord(word: string): boolean {
    const token = this.tokens[this.position];
    return token?.kind === 'word' && token.value.toLowerCase() === word;
  }

  private or(): ConnectionFilter {
    let left = this.and();
    while (this.peekWord('or')) {
      this.position++;
      const a = left;
      const b = this.and();
      left = (c) => a(c) || b(c);
    }
    return left;
  }

  private and(): ConnectionFilter {
    let left = this.unary();
    while (this.peekWord('and')) {
      this.position++;
      const a = left;
      const b = this.unary();
      left = (c) => a(c) && b(c);
    }
    return left;
  }

  private unary(): ConnectionFilter {
    if (this.peekWord('not')) {
      this.position++;
      const inner = this.unary();
      return (c) => !inner(c);
    }
    const token = this.tokens[this.position];
    if (token?.kind === '(') {
      this.position++;
      const inner = this.or();
      if (this.tokens[this.position]?.kind !== ')') throw new FilterError('missing ")"');
      this.position++;
      return inner;
    }
    return this.comparison();
  }

  private comparison(): ConnectionFilter {
    const first = this.tokens[this.position];
    if (first?.kind === 'string' && this.tokens[this.position + 1]?.kind === 'word') {
      const next = this.tokens[this.position + 1] as { value: string };
      if (next.value.toLowerCase() === 'in') {
        const target = this.tokens[this.position + 2];
        if (target?.kind !== 'word' || target.value !== 'groups') {
          throw new FilterError('only "\'<group>\' in groups" is supported after "in"');
        }
        this.position += 3;
        const group = first.value;
        return (c) => c.groups.has(group);
      }
    }
    const left = this.operand();
    const operator = this.tokens[this.position];
    if (operator?.kind !== 'word' || !['eq', 'ne'].includes(operator.value.toLowerCase())) {
      throw new FilterError(
        operator ? `unsupported operator ${describe(operator)}` : 'expected "eq" or "ne"',
      );
    }
    this.position++;
    const right = this.operand();
    return operator.value.toLowerCase() === 'eq'
      ? (c) => left(c) === right(c)
      : (c) => left(c) !== right(c);
  }

  private operand(): Operand {
    const token = this.tokens[this.position++];
    if (!token) throw new FilterError('unexpected end of filter');
    if (token.kind === 'string') {
      const value = token.value;
      return () => value;
    }
    if (token.kind === 'word') {
      switch (token.value) {
        case 'userId':
          return (c) => c.userId ?? null;
        case 'connectionId':
          return (c) => c.id;
        case 'null':
          return () => null;
      }
    }
    throw new FilterError(
      `unsupported operand ${describe(token)} (supported: userId, connectionId, '<string>', null)`,
    );
  }
}

const describe = (token: Token): string =>
  token.kind === 'string'
    ? `'${token.value}'`
    : token.kind === 'word'
      ? `"${token.value}"`
      : `"${token.kind}"`;

/** Compiles a filter; throws {@link FilterError} for syntax the emulator does not support. */
export function compileFilter(filter: string): ConnectionFilter {
  const tokens = tokenize(filter);
  if (tokens.length === 0) throw new FilterError('empty filter');
  return new Parser(tokens).parse();
}
