// SPDX-License-Identifier: GPL-2.0
/*
 * unbd_ublk I/O path: blk-mq queue_rq, the ublkcN character device (mmap of
 * the descriptor areas, FETCH_REQ / COMMIT_AND_FETCH_REQ / NEED_GET_DATA)
 * and noticing that a server died.
 *
 * Every tag of a queue carries the io_uring command the server parked on it.
 * Whoever moves a tag out of TAG_PARKED or TAG_DISPATCHING under q->lock is
 * the only one allowed to complete that command, so a command is completed
 * exactly once, and never after io_uring may have freed it. A command in
 * TAG_DISPATCHING has task work queued on it; only that task work completes
 * it, even when it runs from io_uring's exit fallback instead of the server.
 */
#include <linux/blkdev.h>
#include <linux/fs.h>
#include <linux/io_uring_types.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/nospec.h>
#include <linux/sched/task.h>
#include <linux/uio.h>
#include <linux/vmalloc.h>

#include "unbd_ublk.h"

unsigned int unbd_monitor_ms = 10;
module_param_named(monitor_ms, unbd_monitor_ms, uint, 0644);
MODULE_PARM_DESC(monitor_ms,
		 "Interval (ms) of the fallback check for exited servers");

static unsigned long unbd_monitor_interval(void)
{
	return msecs_to_jiffies(max(unbd_monitor_ms, 1U));
}

void unbd_monitor_kick(struct unbd_dev *dev, unsigned long delay)
{
	if (delay)
		queue_delayed_work(system_wq, &dev->monitor, delay);
	else
		mod_delayed_work(system_wq, &dev->monitor, 0);
}

static bool unbd_task_exiting(struct task_struct *task)
{
	return READ_ONCE(task->flags) & PF_EXITING;
}

/* ---- descriptors and data copy ---- */

static bool unbd_op_supported(struct request *rq)
{
	switch (req_op(rq)) {
	case REQ_OP_READ:
	case REQ_OP_WRITE:
	case REQ_OP_FLUSH:
	case REQ_OP_DISCARD:
	case REQ_OP_WRITE_ZEROES:
		return true;
	default:
		return false;
	}
}

static void unbd_fill_desc(struct ublksrv_io_desc *desc, struct request *rq,
			   u64 buf)
{
	u32 op, flags = 0;

	switch (req_op(rq)) {
	case REQ_OP_READ:
		op = UBLK_IO_OP_READ;
		break;
	case REQ_OP_WRITE:
		op = UBLK_IO_OP_WRITE;
		break;
	case REQ_OP_FLUSH:
		op = UBLK_IO_OP_FLUSH;
		break;
	case REQ_OP_DISCARD:
		op = UBLK_IO_OP_DISCARD;
		break;
	default:
		op = UBLK_IO_OP_WRITE_ZEROES;
		break;
	}
	if (rq->cmd_flags & REQ_FUA)
		flags |= UBLK_IO_F_FUA;
	if (rq->cmd_flags & REQ_NOUNMAP)
		flags |= UBLK_IO_F_NOUNMAP;
	if (rq->cmd_flags & REQ_FAILFAST_DEV)
		flags |= UBLK_IO_F_FAILFAST_DEV;
	if (rq->cmd_flags & REQ_FAILFAST_TRANSPORT)
		flags |= UBLK_IO_F_FAILFAST_TRANSPORT;
	if (rq->cmd_flags & REQ_FAILFAST_DRIVER)
		flags |= UBLK_IO_F_FAILFAST_DRIVER;

	desc->op_flags = op | flags;
	desc->nr_sectors = blk_rq_sectors(rq);
	desc->start_sector = blk_rq_pos(rq);
	desc->addr = buf;
}

static bool unbd_rq_has_data(struct request *rq)
{
	return req_op(rq) == REQ_OP_READ || req_op(rq) == REQ_OP_WRITE;
}

/*
 * Copy up to @len bytes between the request's pages and the server's buffer
 * at @ubuf. Must run in the server's context. Returns the bytes copied.
 */
static size_t unbd_copy(struct request *rq, u64 ubuf, size_t len,
			bool to_server)
{
	struct req_iterator it;
	struct iov_iter iter;
	struct bio_vec bv;
	struct iovec iov;
	size_t done = 0;

	if (import_single_range(to_server ? READ : WRITE,
				u64_to_user_ptr(ubuf), len, &iov, &iter))
		return 0;

	rq_for_each_segment(bv, rq, it) {
		size_t n;

		if (!iov_iter_count(&iter))
			break;
		if (to_server) {
			n = copy_page_to_iter(bv.bv_page, bv.bv_offset,
					      bv.bv_len, &iter);
		} else {
			n = copy_page_from_iter(bv.bv_page, bv.bv_offset,
						bv.bv_len, &iter);
			flush_dcache_page(bv.bv_page);
		}
		done += n;
		if (n < bv.bv_len)
			break;
	}
	return done;
}

/* ---- ending requests ---- */

/* A request the server never saw: it waits for a new server if it can. */
static void unbd_end_unserved(struct unbd_dev *dev, struct request *rq)
{
	if (unbd_recovery(dev) && !READ_ONCE(dev->stopping))
		blk_mq_requeue_request(rq, true);
	else
		blk_mq_end_request(rq, BLK_STS_IOERR);
}

/* A request the dead server held: only REISSUE may send it again. */
static void unbd_end_served(struct unbd_dev *dev, struct request *rq)
{
	if (unbd_reissue(dev) && !READ_ONCE(dev->stopping))
		blk_mq_requeue_request(rq, true);
	else
		blk_mq_end_request(rq, BLK_STS_IOERR);
}

static void unbd_end_with_result(struct request *rq, s32 res, u64 buf)
{
	unsigned int bytes = blk_rq_bytes(rq);

	if (!unbd_rq_has_data(rq)) {
		blk_mq_end_request(rq, res < 0 ? errno_to_blk_status(res) :
				   BLK_STS_OK);
		return;
	}
	/* Zero bytes done would requeue the same request forever. */
	if (res == 0)
		res = -EIO;
	if (res < 0) {
		blk_mq_end_request(rq, errno_to_blk_status(res));
		return;
	}
	if (res > bytes)
		res = bytes;
	if (req_op(rq) == REQ_OP_READ) {
		size_t copied = unbd_copy(rq, buf, res, false);

		if (copied < res) {
			blk_mq_end_request(rq, BLK_STS_IOERR);
			return;
		}
	}
	/* A short result completes the head and re-sends the rest. */
	if (blk_update_request(rq, BLK_STS_OK, res))
		blk_mq_requeue_request(rq, true);
	else
		__blk_mq_end_request(rq, BLK_STS_OK);
}

/* ---- blk-mq ---- */

static void unbd_dispatch_abort(struct unbd_queue *q, struct unbd_tag *t,
				struct io_uring_cmd *cmd,
				unsigned int issue_flags)
{
	struct request *rq;

	spin_lock_irq(&q->lock);
	rq = t->rq;
	t->rq = NULL;
	t->cmd = NULL;
	t->state = TAG_UNFETCHED;
	spin_unlock_irq(&q->lock);

	unbd_end_unserved(q->dev, rq);
	io_uring_cmd_done(cmd, UBLK_IO_RES_ABORT, 0, issue_flags);
	unbd_monitor_kick(q->dev, 0);
}

/* Task work on a parked command: hand the bound request to the server. */
static void unbd_dispatch_tw(struct io_uring_cmd *cmd, unsigned int issue_flags)
{
	struct unbd_cmd_pdu *pdu = unbd_pdu(cmd);
	struct unbd_queue *q = pdu->q;
	struct unbd_tag *t = &q->tags[pdu->tag];
	struct request *rq = t->rq;
	int res = UBLK_IO_RES_OK;

	/* io_uring runs this from a kworker once the server is exiting. */
	if (unlikely(current != q->daemon || unbd_task_exiting(current))) {
		unbd_dispatch_abort(q, t, cmd, issue_flags);
		return;
	}

	if (req_op(rq) == REQ_OP_WRITE) {
		if (unbd_need_get_data(q->dev)) {
			res = UBLK_IO_RES_NEED_GET_DATA;
		} else if (unbd_copy(rq, t->buf, blk_rq_bytes(rq), true) <
			   blk_rq_bytes(rq)) {
			/* Bad server buffer: fail the I/O, keep the tag. */
			spin_lock_irq(&q->lock);
			if (unlikely(q->dead)) {
				spin_unlock_irq(&q->lock);
				unbd_dispatch_abort(q, t, cmd, issue_flags);
				return;
			}
			t->rq = NULL;
			t->state = TAG_PARKED;
			spin_unlock_irq(&q->lock);
			blk_mq_end_request(rq, BLK_STS_IOERR);
			return;
		}
	}

	spin_lock_irq(&q->lock);
	if (unlikely(q->dead)) {
		spin_unlock_irq(&q->lock);
		unbd_dispatch_abort(q, t, cmd, issue_flags);
		return;
	}
	t->state = res == UBLK_IO_RES_OK ? TAG_AT_SERVER : TAG_NEED_DATA;
	t->cmd = NULL;
	spin_unlock_irq(&q->lock);

	io_uring_cmd_done(cmd, res, 0, issue_flags);
}

/*
 * A request whose dispatch copies nothing (reads, flushes, discards, and
 * writes when the server asked for NEED_GET_DATA) can be handed to the server
 * right here: the FETCH completion needs no access to the server's memory, so
 * it need not run in the server's context. That saves the task work, and
 * with it an interrupt of the server's CPU, per request. Rings that defer
 * their completions to the submitter (IORING_SETUP_DEFER_TASKRUN) must still
 * be completed from task work.
 */
static bool unbd_dispatch_inline_ok(struct unbd_dev *dev, struct request *rq,
				    struct io_uring_cmd *cmd)
{
	if (req_op(rq) == REQ_OP_WRITE && !unbd_need_get_data(dev))
		return false;
	return !(cmd_to_io_kiocb(cmd)->ctx->flags & IORING_SETUP_DEFER_TASKRUN);
}

static blk_status_t unbd_dispatch_inline(struct unbd_queue *q,
					 struct unbd_tag *t,
					 struct io_uring_cmd *cmd,
					 struct request *rq)
{
	struct unbd_dev *dev = q->dev;
	int res = req_op(rq) == REQ_OP_WRITE ? UBLK_IO_RES_NEED_GET_DATA :
					       UBLK_IO_RES_OK;
	unsigned long flags;

	spin_lock_irqsave(&q->lock, flags);
	/* As the task work: an exiting server never sees the request. */
	if (unlikely(q->dead || unbd_task_exiting(q->daemon))) {
		t->rq = NULL;
		t->cmd = NULL;
		t->state = TAG_UNFETCHED;
		spin_unlock_irqrestore(&q->lock, flags);
		io_uring_cmd_done(cmd, UBLK_IO_RES_ABORT, 0, 0);
		unbd_monitor_kick(dev, 0);
		/* Started, but blk-mq takes it back on BLK_STS_RESOURCE. */
		if (unbd_recovery(dev) && !READ_ONCE(dev->stopping))
			return BLK_STS_RESOURCE;
		return BLK_STS_IOERR;
	}
	t->state = res == UBLK_IO_RES_OK ? TAG_AT_SERVER : TAG_NEED_DATA;
	t->cmd = NULL;
	spin_unlock_irqrestore(&q->lock, flags);

	io_uring_cmd_done(cmd, res, 0, 0);
	return BLK_STS_OK;
}

static blk_status_t unbd_queue_rq(struct blk_mq_hw_ctx *hctx,
				  const struct blk_mq_queue_data *bd)
{
	struct unbd_queue *q = hctx->driver_data;
	struct unbd_dev *dev = q->dev;
	struct request *rq = bd->rq;
	struct unbd_tag *t = &q->tags[rq->tag];
	struct io_uring_cmd *cmd;
	unsigned long flags;
	u64 buf;

	if (unlikely(!unbd_op_supported(rq)))
		return BLK_STS_NOTSUPP;

	spin_lock_irqsave(&q->lock, flags);
	if (unlikely(q->dead || t->state != TAG_PARKED)) {
		spin_unlock_irqrestore(&q->lock, flags);
		/* No server: recovery devices hold I/O until one returns. */
		if (unbd_recovery(dev) && !READ_ONCE(dev->stopping))
			return BLK_STS_RESOURCE;
		return BLK_STS_IOERR;
	}
	t->state = TAG_DISPATCHING;
	t->rq = rq;
	cmd = t->cmd;
	buf = t->buf;
	spin_unlock_irqrestore(&q->lock, flags);

	unbd_fill_desc(&q->descs[rq->tag], rq, buf);
	blk_mq_start_request(rq);
	if (unbd_dispatch_inline_ok(dev, rq, cmd))
		return unbd_dispatch_inline(q, t, cmd, rq);
	io_uring_cmd_complete_in_task(cmd, unbd_dispatch_tw);
	return BLK_STS_OK;
}

static int unbd_init_hctx(struct blk_mq_hw_ctx *hctx, void *driver_data,
			  unsigned int hctx_idx)
{
	struct unbd_dev *dev = driver_data;

	hctx->driver_data = dev->queues[hctx_idx];
	return 0;
}

const struct blk_mq_ops unbd_mq_ops = {
	.queue_rq	= unbd_queue_rq,
	.init_hctx	= unbd_init_hctx,
};

/* ---- queue state ---- */

int unbd_queues_alloc(struct unbd_dev *dev)
{
	unsigned int depth = dev->info.queue_depth;
	int i;

	for (i = 0; i < dev->info.nr_hw_queues; i++) {
		struct unbd_queue *q;

		q = kvzalloc(struct_size(q, tags, depth), GFP_KERNEL);
		if (!q)
			return -ENOMEM;
		dev->queues[i] = q;
		q->dev = dev;
		q->id = i;
		q->depth = depth;
		spin_lock_init(&q->lock);
		q->descs_bytes = PAGE_ALIGN(depth * sizeof(*q->descs));
		q->descs = vmalloc_user(q->descs_bytes);
		if (!q->descs)
			return -ENOMEM;
	}
	return 0;
}

void unbd_queues_free(struct unbd_dev *dev)
{
	int i;

	for (i = 0; i < dev->info.nr_hw_queues; i++) {
		struct unbd_queue *q = dev->queues[i];

		if (!q)
			continue;
		if (q->daemon)
			put_task_struct(q->daemon);
		vfree(q->descs);
		kvfree(q);
	}
}

bool unbd_all_queues_ready(struct unbd_dev *dev)
{
	bool ready = true;
	int i;

	for (i = 0; i < dev->info.nr_hw_queues && ready; i++) {
		struct unbd_queue *q = dev->queues[i];

		spin_lock_irq(&q->lock);
		ready = !q->dead && q->nr_fetched == q->depth;
		spin_unlock_irq(&q->lock);
	}
	return ready;
}

bool unbd_any_queue_dead(struct unbd_dev *dev)
{
	int i;

	for (i = 0; i < dev->info.nr_hw_queues; i++)
		if (READ_ONCE(dev->queues[i]->dead))
			return true;
	return false;
}

bool unbd_all_queues_dead(struct unbd_dev *dev)
{
	int i;

	for (i = 0; i < dev->info.nr_hw_queues; i++)
		if (!READ_ONCE(dev->queues[i]->dead))
			return false;
	return true;
}

/*
 * Stop serving a queue: no new commands are accepted, parked commands
 * complete with UBLK_IO_RES_ABORT and requests the server holds end (or are
 * re-queued with REISSUE). Tags in TAG_DISPATCHING are left to their task
 * work, which sees q->dead. Idempotent.
 */
void unbd_queue_cancel(struct unbd_queue *q)
{
	int i;

	spin_lock_irq(&q->lock);
	q->dead = true;
	spin_unlock_irq(&q->lock);

	for (i = 0; i < q->depth; i++) {
		struct unbd_tag *t = &q->tags[i];
		struct io_uring_cmd *cmd = NULL;
		struct request *rq = NULL;

		spin_lock_irq(&q->lock);
		switch (t->state) {
		case TAG_PARKED:
			cmd = t->cmd;
			break;
		case TAG_AT_SERVER:
		case TAG_NEED_DATA:
			rq = t->rq;
			break;
		default:
			spin_unlock_irq(&q->lock);
			continue;
		}
		t->state = TAG_UNFETCHED;
		t->cmd = NULL;
		t->rq = NULL;
		spin_unlock_irq(&q->lock);

		if (cmd)
			io_uring_cmd_done(cmd, UBLK_IO_RES_ABORT, 0,
					  IO_URING_F_UNLOCKED);
		if (rq)
			unbd_end_served(q->dev, rq);
	}
}

/* Forget the dead server so that a new one can FETCH every tag. */
void unbd_queues_reset(struct unbd_dev *dev)
{
	int i, tag;

	for (i = 0; i < dev->info.nr_hw_queues; i++) {
		struct unbd_queue *q = dev->queues[i];
		struct task_struct *old;

		spin_lock_irq(&q->lock);
		old = q->daemon;
		q->daemon = NULL;
		q->nr_fetched = 0;
		for (tag = 0; tag < q->depth; tag++)
			WARN_ON_ONCE(q->tags[tag].state != TAG_UNFETCHED);
		q->dead = false;
		spin_unlock_irq(&q->lock);
		if (old)
			put_task_struct(old);
	}
}

/*
 * Fallback death detector. The fast signals are the descriptor mapping
 * being torn down by the exiting process (unbd_vma_close) and task work
 * running in the wrong context; this catches everything else, e.g. a server
 * thread exiting on its own or a server that never mapped its queue.
 */
void unbd_monitor_work(struct work_struct *work)
{
	struct unbd_dev *dev = container_of(to_delayed_work(work),
					    struct unbd_dev, monitor);
	bool watching = false, died = false;
	int i;

	for (i = 0; i < dev->info.nr_hw_queues; i++) {
		struct unbd_queue *q = dev->queues[i];
		bool gone = false;

		spin_lock_irq(&q->lock);
		if (q->daemon && !q->dead) {
			gone = unbd_task_exiting(q->daemon);
			watching |= !gone;
		}
		spin_unlock_irq(&q->lock);

		if (gone) {
			unbd_queue_cancel(q);
			died = true;
		}
	}

	if (died) {
		wake_up_all(&dev->waitq);
		unbd_dev_handle_death(dev);
	}
	if (watching)
		queue_delayed_work(system_wq, &dev->monitor,
				   unbd_monitor_interval());
}

/* ---- /dev/ublkcN ---- */

static int unbd_io_fetch(struct unbd_queue *q, struct io_uring_cmd *cmd,
			 const struct ublksrv_io_cmd *c)
{
	struct unbd_dev *dev = q->dev;
	struct unbd_tag *t = &q->tags[c->tag];
	bool first = false, ready;

	if (!c->addr && !unbd_need_get_data(dev))
		return -EINVAL;

	spin_lock_irq(&q->lock);
	if (q->dead) {
		spin_unlock_irq(&q->lock);
		return UBLK_IO_RES_ABORT;
	}
	if (q->daemon && q->daemon != current) {
		spin_unlock_irq(&q->lock);
		return -EPERM;
	}
	if (t->state != TAG_UNFETCHED) {
		spin_unlock_irq(&q->lock);
		return -EBUSY;
	}
	if (!q->daemon) {
		get_task_struct(current);
		q->daemon = current;
		first = true;
	}
	unbd_pdu(cmd)->q = q;
	unbd_pdu(cmd)->tag = c->tag;
	t->cmd = cmd;
	t->buf = c->addr;
	t->state = TAG_PARKED;
	ready = ++q->nr_fetched == q->depth;
	spin_unlock_irq(&q->lock);

	if (first)
		unbd_monitor_kick(dev, unbd_monitor_interval());
	if (ready)
		wake_up_all(&dev->waitq);
	return -EIOCBQUEUED;
}

static int unbd_io_commit(struct unbd_queue *q, struct io_uring_cmd *cmd,
			  const struct ublksrv_io_cmd *c)
{
	struct unbd_tag *t = &q->tags[c->tag];
	struct request *rq;

	spin_lock_irq(&q->lock);
	if (q->dead) {
		spin_unlock_irq(&q->lock);
		return UBLK_IO_RES_ABORT;
	}
	if (t->state != TAG_AT_SERVER && t->state != TAG_NEED_DATA) {
		spin_unlock_irq(&q->lock);
		return -EINVAL;
	}
	rq = t->rq;
	/* The address is both this read's data and the next request's. */
	if (!c->addr && (req_op(rq) == REQ_OP_READ ||
			 !unbd_need_get_data(q->dev))) {
		spin_unlock_irq(&q->lock);
		return -EINVAL;
	}
	/* Park the next fetch before the tag can be reused by blk-mq. */
	unbd_pdu(cmd)->q = q;
	unbd_pdu(cmd)->tag = c->tag;
	t->cmd = cmd;
	t->buf = c->addr;
	t->rq = NULL;
	t->state = TAG_PARKED;
	spin_unlock_irq(&q->lock);

	unbd_end_with_result(rq, c->result, c->addr);
	return -EIOCBQUEUED;
}

/* Copy the write payload into the buffer the server picked just now. */
static int unbd_io_get_data(struct unbd_queue *q,
			    const struct ublksrv_io_cmd *c)
{
	struct unbd_tag *t = &q->tags[c->tag];
	struct request *rq;

	if (!c->addr)
		return -EINVAL;

	spin_lock_irq(&q->lock);
	if (q->dead) {
		spin_unlock_irq(&q->lock);
		return UBLK_IO_RES_ABORT;
	}
	if (t->state != TAG_NEED_DATA) {
		spin_unlock_irq(&q->lock);
		return -EINVAL;
	}
	rq = t->rq;
	t->buf = c->addr;
	t->state = TAG_AT_SERVER;
	spin_unlock_irq(&q->lock);

	q->descs[c->tag].addr = c->addr;
	if (unbd_copy(rq, c->addr, blk_rq_bytes(rq), true) < blk_rq_bytes(rq))
		return -EFAULT;
	return UBLK_IO_RES_OK;
}

static int unbd_cdev_uring_cmd(struct io_uring_cmd *cmd,
			       unsigned int issue_flags)
{
	struct unbd_dev *dev = cmd->file->private_data;
	struct ublksrv_io_cmd c;
	struct unbd_queue *q;
	struct task_struct *daemon;

	memcpy(&c, cmd->cmd, sizeof(c));
	if (c.q_id >= dev->info.nr_hw_queues)
		return -EINVAL;
	q = dev->queues[array_index_nospec(c.q_id, dev->info.nr_hw_queues)];
	if (c.tag >= q->depth)
		return -EINVAL;
	c.tag = array_index_nospec(c.tag, q->depth);

	/* Data is copied in the caller's address space: no io-wq, no SQPOLL */
	if (current->flags & (PF_IO_WORKER | PF_KTHREAD))
		return -EINVAL;

	if (cmd->cmd_op == UBLK_IO_FETCH_REQ)
		return unbd_io_fetch(q, cmd, &c);

	daemon = READ_ONCE(q->daemon);
	if (daemon != current)
		return daemon ? -EPERM : -EINVAL;

	switch (cmd->cmd_op) {
	case UBLK_IO_COMMIT_AND_FETCH_REQ:
		return unbd_io_commit(q, cmd, &c);
	case UBLK_IO_NEED_GET_DATA:
		if (!unbd_need_get_data(dev))
			return -EINVAL;
		return unbd_io_get_data(q, &c);
	default:
		return -EOPNOTSUPP;
	}
}

static void unbd_vma_close(struct vm_area_struct *vma)
{
	/* Usually the server's process exiting: check its queues now. */
	unbd_monitor_kick(vma->vm_private_data, 0);
}

static const struct vm_operations_struct unbd_vm_ops = {
	.close	= unbd_vma_close,
};

static int unbd_cdev_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct unbd_dev *dev = file->private_data;
	unsigned long len = vma->vm_end - vma->vm_start;
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	struct unbd_queue *q;
	u64 q_id;

	if (off < UBLKSRV_CMD_BUF_OFFSET)
		return -EINVAL;
	off -= UBLKSRV_CMD_BUF_OFFSET;
	if (off % UNBD_DESC_STRIDE)
		return -EINVAL;
	q_id = div_u64(off, UNBD_DESC_STRIDE);
	if (q_id >= dev->info.nr_hw_queues)
		return -EINVAL;
	q = dev->queues[array_index_nospec(q_id, dev->info.nr_hw_queues)];
	if (len > q->descs_bytes)
		return -EINVAL;
	if (vma->vm_flags & VM_WRITE)
		return -EPERM;

	vma->vm_flags &= ~VM_MAYWRITE;
	vma->vm_flags |= VM_DONTCOPY;
	vma->vm_ops = &unbd_vm_ops;
	vma->vm_private_data = dev;
	return remap_vmalloc_range(vma, q->descs, 0);
}

static int unbd_cdev_open(struct inode *inode, struct file *file)
{
	struct unbd_dev *dev = container_of(inode->i_cdev, struct unbd_dev,
					    cdev);

	/* One server at a time; a new one waits for the old file's release */
	if (test_and_set_bit(0, &dev->cdev_busy))
		return -EBUSY;
	file->private_data = dev;
	return 0;
}

static int unbd_cdev_release(struct inode *inode, struct file *file)
{
	struct unbd_dev *dev = file->private_data;

	clear_bit(0, &dev->cdev_busy);
	wake_up_all(&dev->waitq);
	return 0;
}

const struct file_operations unbd_cdev_fops = {
	.owner		= THIS_MODULE,
	.open		= unbd_cdev_open,
	.release	= unbd_cdev_release,
	.mmap		= unbd_cdev_mmap,
	.uring_cmd	= unbd_cdev_uring_cmd,
	.llseek		= noop_llseek,
};
