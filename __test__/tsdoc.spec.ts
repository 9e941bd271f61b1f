/**
 * Every option of the public API says what it does and its default: each property of the option types that
 * src/index.ts exports carries a TSDoc comment with `(default …)`, or `(required)` when it has no default.
 */
import { fileURLToPath } from 'node:url'

import test from 'ava'
import ts from 'typescript'

const SRC = fileURLToPath(new URL('../src/', import.meta.url))

// option types that neither an `…Options` name nor an `options` / `opts` parameter reveals
const EXTRA_TYPES = new Set(['GenerateRequest', 'PixelLimits'])
const OPTION_PARAMS = new Set(['options', 'opts'])

function program(): ts.Program {
  const configPath = fileURLToPath(new URL('../tsconfig.json', import.meta.url))
  const config = ts.readConfigFile(configPath, ts.sys.readFile)
  const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, fileURLToPath(new URL('..', import.meta.url)))
  return ts.createProgram([`${SRC}index.ts`], parsed.options)
}

/** The option types the public API takes: named `…Options`, listed in EXTRA_TYPES, or an `options` parameter's. */
function optionTypes(checker: ts.TypeChecker, index: ts.SourceFile): ts.Type[] {
  const types: ts.Type[] = []
  const fromSignatures = (signatures: readonly ts.Signature[]) => {
    for (const s of signatures) {
      for (const p of s.parameters) if (OPTION_PARAMS.has(p.name)) types.push(checker.getNonNullableType(checker.getTypeOfSymbol(p)))
    }
  }
  const visit = (moduleSymbol: ts.Symbol) => {
    for (const exported of checker.getExportsOfModule(moduleSymbol)) {
      const s = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported
      if (s.flags & ts.SymbolFlags.Module) visit(s) // `export * as evaluation`
      if (s.flags & (ts.SymbolFlags.Interface | ts.SymbolFlags.TypeAlias) && (/Options$/.test(s.name) || EXTRA_TYPES.has(s.name))) {
        types.push(checker.getDeclaredTypeOfSymbol(s))
      }
      const decl = s.valueDeclaration
      if (!decl) continue
      const value = checker.getTypeOfSymbolAtLocation(s, decl)
      if (s.flags & ts.SymbolFlags.Function) fromSignatures(value.getCallSignatures())
      // errors take the standard `{ cause }` options
      if (s.flags & ts.SymbolFlags.Class && !/Error$/.test(s.name)) {
        fromSignatures(value.getConstructSignatures())
        for (const side of [value, checker.getDeclaredTypeOfSymbol(s)]) {
          for (const m of side.getProperties()) fromSignatures(checker.getTypeOfSymbol(m).getCallSignatures())
        }
      }
    }
  }
  visit(checker.getSymbolAtLocation(index)!)
  return types
}

/** `Interface.property`; for an inline type literal, the function, method or property it types: `layout.signal`. */
function label(decl: ts.Declaration, name: string): string {
  for (let n: ts.Node = decl.parent; n; n = n.parent) {
    if (ts.isInterfaceDeclaration(n) || ts.isTypeAliasDeclaration(n) || ts.isFunctionDeclaration(n) || ts.isMethodDeclaration(n) || ts.isPropertySignature(n)) {
      if (n.name && ts.isIdentifier(n.name)) return `${n.name.text}.${name}`
    }
  }
  return name
}

function docText(decl: ts.Node): string {
  return ts
    .getJSDocCommentsAndTags(decl)
    .filter(ts.isJSDoc)
    .map((d) => [ts.getTextOfJSDocComment(d.comment) ?? '', ...(d.tags ?? []).map((t) => ts.getTextOfJSDocComment(t.comment) ?? '')].join(' '))
    .join(' ')
    .trim()
}

/**
 * The options checked, and each one without a TSDoc comment or whose comment states neither its default nor that
 * it is required.
 */
function audit(): { checked: string[]; problems: string[] } {
  const prog = program()
  const checker = prog.getTypeChecker()
  const checked: string[] = []
  const problems: string[] = []
  const seen = new Set<ts.Node>()
  const walk = (type: ts.Type) => {
    for (const prop of checker.getPropertiesOfType(type)) {
      const decl = prop.declarations?.find((d) => ts.isPropertySignature(d) && d.getSourceFile().fileName.startsWith(SRC)) as ts.PropertySignature | undefined
      if (!decl || seen.has(decl)) continue
      seen.add(decl)
      const key = label(decl, prop.name)
      checked.push(key)
      const where = `${key} (${decl.getSourceFile().fileName.slice(SRC.length)})`
      const text = docText(decl)
      let problem: string | undefined
      if (!text) problem = `${where}: no TSDoc comment`
      else if (decl.questionToken && !/\(defaults?\b/.test(text)) problem = `${where}: no "(default …)"`
      else if (!decl.questionToken && !/\(required\b/.test(text)) problem = `${where}: no "(required)"`
      if (problem) problems.push(problem)
      // nested option objects written inline (`models?: { qwen3vl?: string }`) are options too
      const t = checker.getNonNullableType(checker.getTypeOfSymbol(prop))
      for (const part of t.isUnionOrIntersection() ? t.types : [t]) {
        if (part.getSymbol()?.declarations?.some(ts.isTypeLiteralNode)) walk(part)
      }
    }
  }
  for (const t of optionTypes(checker, prog.getSourceFile(`${SRC}index.ts`)!)) walk(t)
  return { checked, problems }
}

test('every option of the public API has a TSDoc comment stating its default, or that it is required', (t) => {
  const { checked, problems } = audit()
  // the walk reaches named option types, `options` parameters, the extra types and inline nested options
  for (const option of ['LoadModelOptions.dtype', 'ServerOptions.maxQueue', 'SolveOptions.mode', 'GenerateRequest.maxTokens', 'models.glyph', 'reportHtml.title']) {
    t.true(checked.includes(option), `${option} is not among the options checked`)
  }
  t.deepEqual(problems, [], `\n${problems.join('\n')}`)
})
