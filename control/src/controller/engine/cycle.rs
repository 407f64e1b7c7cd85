//! What a cycle has worked out about its inputs once the tunnels are grouped: the later
//! phases (fill, orders, explanation) read it all and change none of it.

use super::members::Members;
use super::pairs::Pairs;
use super::transits::Endpoints;
use super::tunnels::{Groups, Row};
use crate::controller::policy::Policy;

/// Borrowed view of one cycle's tables. `'a` is the snapshot's lifetime.
pub(super) struct View<'c, 'a> {
    pub policy: &'c Policy,
    pub members: &'c Members<'a>,
    pub endpoints: &'c Endpoints<'a>,
    pub pairs: &'c Pairs,
    /// Usable tunnel reports, in input order.
    pub rows: &'c [Row<'a>],
    pub groups: &'c Groups,
}

impl View<'_, '_> {
    /// The rows of group `g`, best first.
    pub fn group(&self, g: usize) -> &[u32] {
        self.groups.get(g)
    }
}
