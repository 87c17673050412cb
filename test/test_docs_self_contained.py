"""Every document the code, tests and docs cite is in this repository.

A clone holds only what is committed: design notes, the official-model facts and the ROS
background live in ``docs/`` (``docs/design.md``, ``docs/official_model.md``, ``docs/ros2.md``).
These tests fail on a citation of a file outside the repository (the old design and style notes,
the old specification folder, the shared folder next to the checkout), on a bare section or
quirk number that names no file, on a cited ``docs/<page>.md`` that does not exist, and on a
cited section or quirk number that the page does not have.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / 'docs'
OFFICIAL = 'docs/official_model.md'
THIS_FILE = Path(__file__).resolve()

TEXT_SUFFIXES = {'.py', '.md', '.sh', '.h', '.cu', '.cpp', '.c', '.txt', '.yaml', '.yml',
                 '.cfg', '.toml', '.xml', '.msg', '.json', '.rviz'}
EXTRA_DIRS = ('test', 'docs', 'scripts', 'bench', 'launch', 'config')
SKIP_DIR_NAMES = {'__pycache__', 'build', 'install', 'log', 'dist'}

NUM = r'\d+(?:\.\d+)*[a-z]?'
NUM_LIST = rf'{NUM}(?:\s*(?:,|and|-|–|/)\s*{NUM})*'
# (pattern, what is wrong); written so that this file does not itself contain the citations
FORBIDDEN = [
    (re.compile(r'DESIGN\.md'), 'cites the design note outside the repository: cite docs/design.md'),
    (re.compile(r'STYLE\.md'), 'cites the style note outside the repository'),
    (re.compile(r'\bspec[/]\w+\.md'), 'cites the specification folder outside the repository: '
                                      'cite docs/official_model.md or docs/ros2.md'),
    # except ros_upstream: source archives tier 2 may build from (an input, not a document)
    (re.compile(r'\.\.[/]shared(?![/]ros_upstream)'), 'cites the shared folder outside the repository'),
    (re.compile(r'\b[Ss]pec\s+(?:sections?\s+)?§?\s*\d'),
     'a bare specification section number: cite docs/official_model.md section N'),
]
QUIRK_NUMBERS = re.compile(r'\b[Qq]uirks?\s+(\d+(?:\s*(?:,|and|-|/)\s*\d+)*)')
DOC_CITATION = re.compile(rf'docs/(\w+)\.md`?(?:\s+(?:sections?\s+)?({NUM_LIST}))?')
HEADING = re.compile(rf'^#+\s+({NUM})[.\s]')
QUIRK_ENTRY = re.compile(r'^\*\*Quirk (\d+)\*\*')


def scanned_files() -> list[Path]:
    """Every text file of the packages (folders with ``__init__.py``), test/, docs/, ... + README."""
    dirs = [p for p in sorted(ROOT.iterdir())
            if p.is_dir() and not p.name.startswith('.') and (p / '__init__.py').exists()]
    dirs += [ROOT / name for name in EXTRA_DIRS if (ROOT / name).is_dir()]
    files = [ROOT / 'README.md']
    for folder in dirs:
        for path in sorted(folder.rglob('*')):
            parents = path.relative_to(ROOT).parts[:-1]
            if any(p in SKIP_DIR_NAMES or p.startswith('.') or p.endswith('.egg-info')
                   for p in parents):
                continue
            if path.is_file() and path.suffix in TEXT_SUFFIXES and path.resolve() != THIS_FILE:
                files.append(path)
    return sorted(set(files))


def headings(page: Path) -> set[str]:
    """Section numbers of a docs page ("2.4.1", "3e"), from its markdown headings."""
    return {m.group(1) for line in page.read_text(encoding='utf-8').splitlines()
            if (m := HEADING.match(line))}


def quirk_entries(page: Path) -> list[str]:
    """The numbers of the ``**Quirk N**`` entries of a page, in order."""
    return [m.group(1) for line in page.read_text(encoding='utf-8').splitlines()
            if (m := QUIRK_ENTRY.match(line))]


def outside_citations(line: str, in_official_page: bool = False) -> list[str]:
    """What is wrong with one line's citations of documents outside the repository."""
    problems = [why for pattern, why in FORBIDDEN if pattern.search(line)]
    if QUIRK_NUMBERS.search(line) and OFFICIAL not in line and not in_official_page:
        problems.append('a quirk number without docs/official_model.md on the same line')
    return problems


def dangling_citations(line: str, in_official_page: bool = False) -> list[str]:
    """Cited docs pages, sections and quirks of one line that do not exist."""
    problems = []
    for name, numbers in DOC_CITATION.findall(line):
        page = DOCS / f'{name}.md'
        if not page.is_file():
            problems.append(f'docs/{name}.md does not exist')
            continue
        missing = [n for n in re.findall(NUM, numbers) if n not in headings(page)]
        if missing:
            problems.append(f'docs/{name}.md has no section {", ".join(missing)}')
    if OFFICIAL in line or in_official_page:
        known = set(quirk_entries(DOCS / 'official_model.md'))
        for group in QUIRK_NUMBERS.findall(line):
            problems += [f'docs/official_model.md has no quirk {n}'
                         for n in re.findall(r'\d+', group) if n not in known]
    return problems


def collect(check) -> list[str]:
    found = []
    for path in scanned_files():
        rel = path.relative_to(ROOT).as_posix()
        try:
            lines = path.read_text(encoding='utf-8').splitlines()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(lines, 1):
            for why in check(line, in_official_page=(rel == OFFICIAL)):
                found.append(f'{rel}:{number}: {why}\n    {line.strip()}')
    return found


def test_nothing_cites_a_document_outside_the_repository():
    problems = collect(outside_citations)
    assert not problems, ('citations of documents a clone does not contain (run the citation '
                          'rewrite, or cite docs/):\n' + '\n'.join(problems))


def test_every_cited_docs_page_section_and_quirk_exists():
    problems = collect(dangling_citations)
    assert not problems, 'citations that point at nothing:\n' + '\n'.join(problems)


def test_official_model_page_numbers_its_sections_and_quirks_once():
    page = DOCS / 'official_model.md'
    numbers = [m.group(1) for line in page.read_text(encoding='utf-8').splitlines()
               if (m := HEADING.match(line))]
    assert len(numbers) == len(set(numbers)), 'a section number is used twice'
    assert {str(n) for n in range(1, 14)} <= set(numbers)
    assert quirk_entries(page) == [str(n) for n in range(1, 32)]      # 23..31: SparseBEV++ (13)


def test_checker_flags_each_kind_of_bad_citation():
    # built from pieces so that this file contains none of the citations it forbids
    bad_lines = [
        'see ' + 'DESIGN' + '.md section 3',
        'see ' + 'STYLE' + '.md',
        '(' + 'spec' + '/sparsebev.md section 2.4)',
        '../' + 'shared/parity/README.md',
        '# official behaviour (' + 'spec' + ' 10.3)',
        'x = 1  # ' + 'quirk' + ' 5',
    ]
    for line in bad_lines:
        assert outside_citations(line), line
    dangling = [
        'docs/no_such_page.md',
        OFFICIAL + ' section 99.1',
        OFFICIAL + ', ' + 'quirk' + ' 32',
        'docs/ros2.md section 3z',
    ]
    for line in dangling:
        assert dangling_citations(line), line
    good = [
        OFFICIAL + ' sections 2.4, 2.6, 2.7 and 6.1-6.2',
        OFFICIAL + ' 5.5 and ' + 'quirk' + ' 22',
        'x = 1  # ' + OFFICIAL + ', ' + 'quirk' + ' 5',
        'docs/design.md section 3',
        '`docs/ros2.md` section 3e',
        "the spec's eSE flag",
    ]
    for line in good:
        assert not outside_citations(line) and not dangling_citations(line), line
