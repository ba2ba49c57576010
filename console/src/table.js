// A live table of one view: sorting, a filter box and paging. The retained view message holds
// the first rows (at most the service's row cap, 1000 by default) of `total`; pages past them
// are asked of the service with `views.get` {view, offset, limit}, in the view's own order.
// Sorting and filtering work on the rows the console holds; "Load all" fetches the rest.
// Every row held is tagged with the view position it was read at: the retained message lags the
// service a little (the relay publishes views a few times a second) and the view may change
// between two `views.get` pages, so a page is shown from rows of one position only (the newest
// read), never a mixture in which a row shows twice or not at all.
import { capped, clear, h, shown } from './dom.js';

const PAGE_SIZES = [10, 25, 50, 100, 200];
const MAX_HELD = 20_000; // rows "Load all" fetches at most
const MAX_FETCHES = 60; // views.get requests per page fill

function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined || a === '') return 1;
  if (b === null || b === undefined || b === '') return -1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'boolean' && typeof b === 'boolean') return a ? -1 : 1;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

export class Table {
  /**
   * view: the view's name; columns: [{key, label, value?(row), cell?(row)}]; rowKey(row);
   * actions?(row) -> [buttons]; onOpen?(row); rowClass?(row); fetchRows(offset, limit) ->
   * Promise<reply>; pageSize.
   */
  constructor(options) {
    Object.assign(this, {
      actions: null, onOpen: null, rowClass: null, pageSize: 50, empty: 'No rows.',
    }, options);
    this.held = new Map(); // offset in the view's order -> row
    this.at = new Map(); // offset -> the view position that row was read at
    this.latest = null; // the position the rows shown are read at (the newest read)
    this.total = 0;
    this.position = null;
    this.retainedCount = 0;
    this.sort = { key: null, dir: 1 };
    this.filter = '';
    this.page = 0;
    this.fetching = false;
    this.fetchAgain = false;
    this.wantAll = false;
    this.note = '';
    this.limitCap = null; // the most rows one views.get may ask for (the service's row cap)
    this.build();
  }

  build() {
    const id = this.view;
    this.filterInput = h('input', {
      type: 'search', placeholder: 'Filter rows…', 'aria-label': `Filter ${id}`,
      'data-testid': `filter-${id}`, maxlength: 200,
      oninput: () => { this.filter = this.filterInput.value.trim().toLowerCase(); this.page = 0; this.render(); },
    });
    this.info = h('span', { class: 'info', 'data-testid': `info-${id}` });
    this.loadAll = h('button', {
      type: 'button', class: 'quiet', hidden: true, 'data-testid': `load-all-${id}`,
      onclick: () => { this.wantAll = true; this.fill(0, Math.min(this.total, MAX_HELD)); },
    }, 'Load all rows');
    this.head = h('tr');
    this.body = h('tbody');
    this.table = h('table', { class: `grid view-${id}`, 'data-testid': `table-${id}` },
      h('thead', {}, this.head), this.body);
    this.pageText = h('span', { class: 'page-text', 'data-testid': `pager-${id}` });
    this.prev = h('button', { type: 'button', class: 'quiet', 'data-testid': `prev-${id}`,
      onclick: () => { this.page -= 1; this.render(); } }, '‹ Previous');
    this.next = h('button', { type: 'button', class: 'quiet', 'data-testid': `next-${id}`,
      onclick: () => { this.page += 1; this.render(); } }, 'Next ›');
    this.sizeSelect = h('select', {
      'aria-label': 'Rows per page', 'data-testid': `page-size-${id}`,
      onchange: () => { this.pageSize = Number(this.sizeSelect.value); this.page = 0; this.render(); },
    }, PAGE_SIZES.map((n) => h('option', { value: n }, `${n} per page`)));
    this.sizeSelect.value = String(this.pageSize);
    this.noteLine = h('p', { class: 'table-note', 'data-testid': `note-${id}` });
    this.element = h('div', { class: 'table-box' },
      h('div', { class: 'toolbar' }, this.filterInput, this.info, this.loadAll),
      this.noteLine,
      h('div', { class: 'scroll' }, this.table),
      h('div', { class: 'pager' }, this.prev, this.pageText, this.next, this.sizeSelect));
    this.buildHead();
  }

  buildHead() {
    clear(this.head);
    for (const column of this.columns) {
      const active = this.sort.key === column.key;
      const arrow = active ? (this.sort.dir > 0 ? ' ▲' : ' ▼') : '';
      this.head.append(h('th', {
        scope: 'col', 'aria-sort': active ? (this.sort.dir > 0 ? 'ascending' : 'descending') : 'none',
      }, h('button', {
        type: 'button', class: 'sort', 'data-testid': `sort-${this.view}-${column.key}`,
        onclick: () => this.sortBy(column.key),
      }, column.label + arrow)));
    }
    if (this.actions) this.head.append(h('th', { scope: 'col', class: 'actions-head' }, 'Actions'));
  }

  /** Sort by `key`: ascending, then descending, then the view's own order. */
  sortBy(key) {
    if (this.sort.key !== key) this.sort = { key, dir: 1 };
    else if (this.sort.dir > 0) this.sort = { key, dir: -1 };
    else this.sort = { key: null, dir: 1 };
    this.page = 0;
    this.buildHead();
    this.render();
  }

  /** A new retained view message (or a reply to views.get without offset). */
  update(message) {
    const rows = Array.isArray(message.rows) ? message.rows : [];
    const changed = message.position !== this.position || rows.length !== this.retainedCount;
    // The same message again while pages read later show a newer position: its total is older.
    const behind = !changed && this.latest !== null && this.latest !== message.position;
    this.position = message.position;
    if (!behind) this.total = Number.isInteger(message.total) ? message.total : rows.length;
    this.retainedCount = rows.length;
    if (this.total > rows.length && rows.length > 0) this.limitCap ??= rows.length;
    // Rows fetched past the retained ones: still right when the view did not change; when it
    // did, fetched again for the new position (sorting and filtering keep covering them).
    let extent = 0;
    for (const offset of this.held.keys()) extent = Math.max(extent, offset + 1);
    if (changed || this.latest === null) {
      this.held = new Map(rows.map((row, i) => [i, row]));
      this.at = new Map(rows.map((row, i) => [i, message.position]));
      this.latest = message.position;
    } else {
      // The same message again: it fills what is not held at the position shown.
      rows.forEach((row, i) => {
        if (this.current(i)) return;
        this.held.set(i, row);
        this.at.set(i, message.position);
      });
    }
    this.omitted = message.omitted ?? 0;
    this.render();
    const wanted = Math.min(this.total, this.wantAll ? MAX_HELD : extent);
    if (changed && wanted > this.held.size) this.fill(0, wanted);
  }

  value(column, row) {
    return column.value ? column.value(row) : row[column.key];
  }

  /** Whether the row at `offset` is held and read at the position shown. */
  current(offset) {
    return this.held.has(offset) && this.at.get(offset) === this.latest;
  }

  /** The rows held in the view's order: those read at the position shown, then (sorting and
   * filtering cover every row held) the others whose key none of those has. */
  heldRows() {
    const entries = [...this.held.entries()].sort((a, b) => a[0] - b[0]);
    const rows = entries.filter(([offset]) => this.at.get(offset) === this.latest).map((e) => e[1]);
    const keys = new Set(rows.map((row) => this.rowKey(row)));
    for (const [offset, row] of entries) {
      if (this.at.get(offset) === this.latest || keys.has(this.rowKey(row))) continue;
      keys.add(this.rowKey(row));
      rows.push(row);
    }
    return rows;
  }

  text(row) {
    return this.columns.map((c) => shown(this.value(c, row))).join('\u0000').toLowerCase();
  }

  /** The rows of the current page, and how many pages there are. */
  pageRows() {
    const size = this.pageSize;
    if (!this.filter && !this.sort.key) {
      const pages = Math.max(1, Math.ceil(this.total / size));
      this.page = Math.min(Math.max(0, this.page), pages - 1);
      const start = this.page * size;
      const end = Math.min(this.total, start + size);
      const rows = [];
      let missing = false;
      for (let offset = start; offset < end; offset += 1) {
        if (this.current(offset)) rows.push(this.held.get(offset));
        else missing = true;
      }
      if (missing) this.fill(start, end);
      return { rows, pages, shown: this.total, missing };
    }
    let rows = this.heldRows();
    if (this.filter) rows = rows.filter((row) => this.text(row).includes(this.filter));
    if (this.sort.key) {
      const column = this.columns.find((c) => c.key === this.sort.key);
      rows = rows.map((row, i) => [row, i]).sort((a, b) => (
        compare(this.value(column, a[0]), this.value(column, b[0])) * this.sort.dir || a[1] - b[1]
      )).map((pair) => pair[0]);
    }
    const pages = Math.max(1, Math.ceil(rows.length / size));
    this.page = Math.min(Math.max(0, this.page), pages - 1);
    return { rows: rows.slice(this.page * size, (this.page + 1) * size), pages, shown: rows.length };
  }

  /** Fetch the rows at offsets [start, end) the console does not hold (views.get pages). */
  async fill(start, end) {
    if (this.fetching) {
      this.fetchAgain = true;
      return;
    }
    this.fetching = true;
    try {
      for (let i = 0; i < MAX_FETCHES; i += 1) {
        let first = start;
        while (first < end && this.current(first)) first += 1;
        if (first >= end) break;
        const wanted = end - first;
        const limit = Math.max(1, Math.min(wanted, this.limitCap ?? wanted));
        const asked = this.position;
        const reply = await this.fetchRows(first, limit);
        if (this.position !== asked) continue; // the view moved meanwhile: its rows shifted
        const cap = /limit must be an integer from 1 to (\d+)/.exec(reply.error?.message ?? '');
        if (!reply.ok && cap && Number(cap[1]) < limit) {
          this.limitCap = Number(cap[1]); // views.get takes at most the view's row cap
          continue;
        }
        if (!reply.ok) {
          this.note = `Rows ${first + 1}-${end} could not be fetched: ${reply.error?.message ?? 'no reply'}`;
          break;
        }
        const result = reply.result ?? {};
        const rows = Array.isArray(result.rows) ? result.rows : [];
        if (Number.isInteger(result.total)) this.total = result.total;
        if (rows.length === 0) break;
        const base = Number.isInteger(result.offset) ? result.offset : first;
        // A page read at another position than the rows shown (the view moved, or the
        // retained message lags the service): it becomes the position shown, and the rows
        // read at the other one are read again.
        const at = Number.isInteger(result.position) ? result.position : this.latest;
        if (at !== this.latest) this.latest = at;
        rows.forEach((row, k) => {
          this.held.set(base + k, row);
          this.at.set(base + k, at);
        });
        end = Math.min(end, this.total);
        this.note = '';
      }
    } finally {
      this.fetching = false;
    }
    this.render(false);
    if (this.fetchAgain) {
      this.fetchAgain = false;
      this.render();
    }
  }

  render(mayFetch = true) {
    const { rows, pages, shown: count, missing } = mayFetch ? this.pageRows() : this.withoutFetch();
    clear(this.body);
    if (rows.length === 0) {
      this.body.append(h('tr', { class: 'empty' }, h('td', {
        colspan: this.columns.length + (this.actions ? 1 : 0),
      }, missing ? 'Loading rows from the service…' : (this.total === 0 ? this.empty : 'No row matches the filter.'))));
    }
    for (const row of rows) this.body.append(this.rowElement(row));
    const filtered = this.filter || this.sort.key;
    this.info.textContent = filtered
      ? `${count} of ${this.held.size} rows held (${this.total} in the view)`
      : `${this.total} row${this.total === 1 ? '' : 's'}`;
    const partial = filtered && this.held.size < this.total;
    this.loadAll.hidden = !partial;
    this.noteLine.textContent = this.note || (partial
      ? `Sorting and filtering cover the ${this.held.size} rows the console holds of ${this.total}: "Load all rows" fetches the rest (up to ${MAX_HELD}).`
      : '');
    this.noteLine.hidden = !this.noteLine.textContent;
    this.pageText.textContent = `Page ${this.page + 1} of ${pages}`;
    this.prev.disabled = this.page <= 0;
    this.next.disabled = this.page >= pages - 1;
  }

  withoutFetch() {
    const fetch = this.fill;
    this.fill = () => {};
    try {
      return this.pageRows();
    } finally {
      this.fill = fetch;
    }
  }

  rowElement(row) {
    const cells = this.columns.map((column) => {
      const made = column.cell ? column.cell(row) : capped(shown(this.value(column, row)));
      return h('td', { class: `col-${column.key}` }, made);
    });
    if (this.actions) {
      cells.push(h('td', { class: 'actions' }, this.actions(row)));
    }
    const tr = h('tr', {
      class: this.rowClass ? this.rowClass(row) : '', 'data-id': this.rowKey(row),
      tabindex: this.onOpen ? 0 : null, title: this.onOpen ? 'Open its trace' : null,
    }, cells);
    if (this.onOpen) {
      tr.addEventListener('click', (event) => {
        if (event.target.closest('button, a, input, select, textarea')) return;
        this.onOpen(row);
      });
      tr.addEventListener('keydown', (event) => {
        if (event.key === 'Enter' && event.target === tr) this.onOpen(row);
      });
    }
    return tr;
  }
}
