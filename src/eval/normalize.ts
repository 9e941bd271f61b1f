/**
 * Answer-string normalization, after math-evaluation-harness `strip_string` (the grader VTC-R1 used), minus
 * its rules that make wrong answers pass: its unit list deletes the words "a", "c", "s", "t", "and", …
 * anywhere; here units are only removed after a number at the end of the answer.
 */
import { matchBrace, unwrapBoxes } from '../latex.js'

const UNICODE: [RegExp, string | ((m: string) => string)][] = [
  [/[−–—]/g, '-'],
  [/×/g, '\\times '],
  [/[·⋅]/g, '\\cdot '],
  [/π/g, '\\pi '],
  [/∞/g, '\\infty '],
  [/√/g, '\\sqrt'],
  [/°/g, '^\\circ'],
  [/∪/g, '\\cup '],
  [/±/g, '\\pm '],
  [/ /g, ' '],
  [/[₀-₉]+/g, (d: string) => '_' + [...d].map((c) => c.charCodeAt(0) - 0x2080).join('')],
]

/** Unit words removed when they trail a number (`5 cm`, `864 inches^2`, `\$18.90 dollars`). */
const UNITS = [
  'units?', 'square\\s+units?', 'sq\\.?\\s*units?', 'cubic\\s+units?',
  'cm', 'mm', 'km', 'm', 'meters?', 'metres?', 'kilometers?', 'centimeters?', 'millimeters?',
  'in', 'inch(?:es)?', 'ft', 'foot', 'feet', 'yards?', 'yd', 'miles?', 'mi',
  'square\\s+(?:feet|inches|meters|units|centimeters|miles|yards)', 'sq\\s*(?:ft|in|m|cm)',
  'degrees?', 'deg', 'radians?', 'rad',
  'cents?', 'dollars?', 'euros?',
  'seconds?', 'secs?', 'minutes?', 'mins?', 'hours?', 'hrs?', 'days?', 'weeks?', 'months?', 'years?',
  'mph', 'km/h', 'kmh', 'm/s', 'ft/s',
  'kg', 'g', 'grams?', 'lbs?', 'pounds?', 'ounces?', 'oz',
  'liters?', 'litres?', 'ml', 'mL', 'gallons?', 'cups?',
  'people', 'persons?', 'students?', 'ways', 'times', 'points?', 'percent',
]
const UNIT_TAIL = new RegExp(
  `([\\d}]|\\\\pi)(?:\\s+|\\s*\\\\(?:text|mbox|mathrm)\\{\\s*)(?:${UNITS.join('|')})\\.?\\s*\\}?(?:\\^\\{?[23]\\}?|[²³])?$`,
)

const WORD_NUMBERS: Record<string, number> = {
  zero: 0, one: 1, two: 2, three: 3, four: 4, five: 5, six: 6, seven: 7, eight: 8, nine: 9, ten: 10,
  eleven: 11, twelve: 12, thirteen: 13, fourteen: 14, fifteen: 15, sixteen: 16, seventeen: 17,
  eighteen: 18, nineteen: 19, twenty: 20, thirty: 30, forty: 40, fifty: 50, sixty: 60, seventy: 70,
  eighty: 80, ninety: 90, hundred: 100, thousand: 1000,
}

const ROW = '\u0001'

/** Canonical form of an answer string, for string comparison and as input to the structural/CAS steps. */
export function normalizeAnswer(raw: string): string {
  let s = raw.trim()
  for (const [re, to] of UNICODE) s = s.replace(re, to as string)
  s = unwrapBoxes(s)
  s = s.replace(/\n/g, ' ').trim()
  s = s.replace(/\\\$/g, '').replace(/\$/g, '')
  // `\\` (matrix row break) is kept aside so `\\ ` is not read as the spacing command `\ `
  s = s.replace(/\\\\/g, ROW)
  s = s.replace(/\\[!,;:>]|\\ |\\q?quad\b|~|\\displaystyle\b|\\limits\b/g, ' ')
  s = s.replace(/\{,\}/g, ',') // 10{,}080: the braced comma of LaTeX number typesetting
  s = s.replace(/\\[dt]frac(?![a-zA-Z])/g, '\\frac')
  s = s.replace(/\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])\.?/g, '')
  s = s.replace(/\\begin\{array\}\{[^{}]*\}/g, '\\begin{pmatrix}').replace(/\\end\{array\}/g, '\\end{pmatrix}')
  s = s.replace(/\\(begin|end)\{[bB]?matrix\}/g, '\\$1{pmatrix}')
  // degrees: ^\circ, ^{\circ}, \degree (a bare \circ after a number too)
  s = s.replace(/\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])/g, '')
  s = s.replace(/(\d)\s*\\circ(?![a-zA-Z])/g, '$1')
  s = s.replace(/\.+$/, '').trim()
  s = stripUnits(s)
  s = unwrapTextCommands(s)
  s = s.replace(/\\mathbf\b|\\boldsymbol\b/g, '')
  // ordinals: 12^{\mathrm{th}}, 12^{th}, 12th → 12
  s = s.replace(/(\d)\s*(?:\^\s*\{?\s*)?(?:st|nd|rd|th)\s*\}?$/, '$1')
  // a spelled-out pi ("18 + 2pi") is the constant
  s = s.replace(/(^|[^\\a-zA-Z])pi(?![a-zA-Z])/g, '$1\\pi ')
  s = stripUnits(s)
  s = s.replace(/\\%|%|\s*\bpercent\b/g, '')
  s = s.replace(/\\emptyset|\\varnothing/g, '\\{\\}')
  s = s.replace(/\\\{/g, '{').replace(/\\\}/g, '}')
  s = s.replace(/(?<!\\)\b(?:infinity|inf)\b/g, '\\infty')
  s = s.replace(/\s+and\s+/g, ',')
  // "x \in [2,5]" states the set the variable lies in: the set is the answer
  s = s.replace(/^[a-zA-Z]\s*\\in\s*/, '')
  s = s.replace(/(^|[\s{(\[,=+\-*/])\.(\d)/g, '$10.$2')
  s = collapseSpaces(s)
  s = fixFracs(s)
  s = s.replace(/\\sqrt\s*([0-9a-zA-Z])/g, '\\sqrt{$1}')
  s = s.replace(/_\{(\w)\}/g, '_$1')
  if (/^-?\d+\/\d+$/.test(s)) {
    const [a, b] = s.replace(/^-/, '').split('/')
    s = `${s.startsWith('-') ? '-' : ''}\\frac{${a}}{${b}}`
  }
  if (/^-?\d{1,3}(,\d{3})+(\.\d+)?$/.test(s)) s = s.replace(/,/g, '')
  s = s.replace(/(\d)\.0+(?![\d])/g, '$1')
  s = s.replace(/(\d\.\d*?[1-9])0+(?![\d])/g, '$1')
  const lower = s.toLowerCase()
  if (Object.hasOwn(WORD_NUMBERS, lower)) s = String(WORD_NUMBERS[lower])
  return s.replace(/\.+$/, '').replaceAll(ROW, '\\\\')
}

function stripUnits(s: string): string {
  const m = UNIT_TAIL.exec(s)
  if (!m) return s
  const kept = s.slice(0, m.index + m[1].length).trim()
  return kept || s
}

/** `\text{X}`, `\textbf{X}`, `\mathrm{X}`, `\mbox{X}` → `X`; a trailing unit-like `\text{…}` after a number goes. */
function unwrapTextCommands(s: string): string {
  // trailing unit in text after a numeric expression: "5.4 \text{ cents}", "\frac{270}7\text{ degrees}"
  const tail = /(\\(?:text|mbox|mathrm)\{[^{}]*\})(\^\{?\d\}?)?$/.exec(s)
  if (tail) {
    const before = s.slice(0, tail.index).trim()
    const words = tail[1].replace(/^\\\w+\{|\}$/g, '').trim()
    if (/[\d}]$/.test(before) && /^[a-zA-Z ]+$/.test(words)) s = before
  }
  const cmd = /\\(?:text|textbf|textit|textrm|mathrm|mathit|mbox|textnormal|mathbf)\s*\{/g
  for (let guard = 0; guard < 32; guard++) {
    cmd.lastIndex = 0
    const m = cmd.exec(s)
    if (!m) break
    const open = m.index + m[0].length - 1
    const close = matchBrace(s, open)
    if (close < 0) break
    s = s.slice(0, m.index) + s.slice(open + 1, close) + s.slice(close + 1)
  }
  return s.trim()
}

/** Drop whitespace, except one space after a `\command` followed by a letter (`\cot x` must not become `\cotx`). */
function collapseSpaces(s: string): string {
  return s
    .replace(/\s+/g, ' ')
    .replace(/(\\[a-zA-Z]+) (?=[a-zA-Z])/g, '$1\u0000')
    .replace(/ /g, '')
    .replace(/\u0000/g, ' ')
}

/** `\frac12`, `\frac1{2}`, `\frac{1}2`, `\frac 59` → `\frac{1}{2}` (LaTeX reads a bare token as the argument). */
export function fixFracs(s: string): string {
  let out = ''
  let i = 0
  for (;;) {
    const at = s.indexOf('\\frac', i)
    if (at < 0 || /[a-zA-Z]/.test(s[at + 5] ?? '')) {
      if (at < 0) return out + s.slice(i)
      out += s.slice(i, at + 5)
      i = at + 5
      continue
    }
    out += s.slice(i, at) + '\\frac'
    let j = at + 5
    for (let arg = 0; arg < 2; arg++) {
      while (s[j] === ' ') j++
      if (s[j] === '{') {
        const close = matchBrace(s, j)
        if (close < 0) return out + s.slice(j)
        out += `{${fixFracs(s.slice(j + 1, close))}}`
        j = close + 1
      } else if (s[j] === '\\') {
        const cmd = /^\\[a-zA-Z]+/.exec(s.slice(j))?.[0] ?? s.slice(j, j + 2)
        out += `{${cmd}}`
        j += cmd.length
      } else if (j < s.length) {
        out += `{${s[j]}}`
        j++
      }
    }
    i = j
  }
}
